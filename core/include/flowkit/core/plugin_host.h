// flowkit/core/plugin_host.h — discovers plugin manifests, loads libraries on first use,
// keeps them loaded for the life of the process, and builds components.
#pragma once
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "flowkit/core/manifest.h"
#include "flowkit/registry.h"

namespace flowkit::core {

struct SearchOptions {
  std::vector<std::string> plugin_paths;  // --plugin-path, highest precedence
  bool use_environment = true;            // FLOWKIT_PLUGIN_PATH (colon-separated)
  bool use_default_dirs = true;           // the install's plugin dir, else the build tree's
};

// The directories searched, in order.
std::vector<std::string> plugin_search_dirs(const SearchOptions& options);

class PluginHost {
 public:
  explicit PluginHost(const SearchOptions& options = {});
  ~PluginHost();
  PluginHost(const PluginHost&) = delete;
  PluginHost& operator=(const PluginHost&) = delete;

  // Manifests found (reading JSON only; nothing is dlopen'ed).
  const std::vector<PluginManifest>& plugins() const { return plugins_; }
  // Manifests that could not be read (kept so `flowkit plugins` can show them).
  const std::vector<std::string>& manifest_errors() const { return manifest_errors_; }
  const std::vector<std::string>& search_dirs() const { return dirs_; }

  // The declared component "plugin.name", or an error with a did-you-mean suggestion.
  Expected<const ComponentSpec*> find(const std::string& type) const;
  std::vector<std::string> component_types() const;

  // Refuse to load `plugin` unless its library's sha256 equals `sha256_hex`.
  void pin_sha256(const std::string& plugin, const std::string& sha256_hex);

  // Loads the plugin (first use only) and checks it; the error is precise and complete.
  Expected<bool> load(const std::string& plugin);
  bool is_loaded(const std::string& plugin) const;

  // Builds a component. `cfg` is its resolved section (with "type"). Throws flowkit::Error
  // (ConfigError where the config is to blame); never lets a plugin exception escape raw.
  std::unique_ptr<Component> create(Kind kind, const Config& cfg, const BuildContext& ctx);

 private:
  using Factories = std::map<std::pair<Kind, std::string>, Factory>;
  const PluginManifest* manifest_of(const std::string& plugin, std::string* error) const;
  std::vector<std::string> dirs_;
  std::vector<PluginManifest> plugins_;
  std::vector<std::string> manifest_errors_;
  std::map<std::string, std::string> pins_;
  std::map<std::string, Factories> loaded_;  // by plugin name; libraries stay mapped forever
};

// Helpers shared with the pipeline validator.
std::string did_you_mean(const std::string& word, const std::vector<std::string>& candidates);
std::string sha256_file(const std::string& path);
bool debug_plugins_enabled();

}  // namespace flowkit::core
