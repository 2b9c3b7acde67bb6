// The generator behind `flowkit new-plugin NAME [--kind K ...] [--dir DIR]`: a complete,
// buildable out-of-tree plugin folder (manifest, one source per component, a CMakeLists using
// find_package(flowkit) / flowkit_add_plugin(), example pipelines, a conformance test and a
// README) that builds and passes `flowkit conformance` unchanged. Torch-free: the standard
// library and fmt only, so the `flowkit` binary does not link LibTorch.
#pragma once
#include <stdexcept>
#include <string>
#include <vector>

namespace flowkit::host {

struct NewPluginRequest {
  std::string name;                // plugin name: [a-z][a-z0-9_]* (also the CMake target and library)
  std::vector<std::string> kinds;  // subset of domain, path, model, loss, solver; empty = all five
  std::string dir = ".";           // parent folder; the plugin goes to dir/name
  bool force = false;              // overwrite the generated files in an existing non-empty folder
};

// Thrown when dir/name exists and is not empty (and force is off), or is not a folder.
class PluginFolderExists : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// The kinds a request may name, in build order.
const std::vector<std::string>& new_plugin_kinds();

// Writes the plugin folder; returns the paths of the files written. Throws
// std::invalid_argument for a bad name or kind (the message says what is allowed),
// PluginFolderExists (a std::runtime_error) when the target folder exists and is not empty
// (the message names it and says --force), and std::runtime_error when a file cannot be written.
std::vector<std::string> write_new_plugin(const NewPluginRequest& request);

}  // namespace flowkit::host
