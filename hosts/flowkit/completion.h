// Shell completion: `flowkit completion bash|zsh` prints a script that asks the (instant,
// torch-free) binary itself what may come next: `flowkit __complete WORD... CURRENT`.
#pragma once
#include <CLI/CLI.hpp>

#include <string>
#include <vector>

#include "flowkit/core/plugin_catalog.h"

namespace flowkit::host {

// The script for `shell` ("bash" or "zsh"); throws std::invalid_argument for another.
std::string completion_script(const std::string& shell);

// Candidates for the last of `words` (the words after "flowkit"; the last may be empty).
// Special first lines tell the script what to do instead or as well:
//   "@pipelines" complete pipeline files (*.json) and directories
//   "@files"   complete any file name (a checkpoint)
//   "@dirs"    complete directory names
//   "@nospace" do not append a space (a "section." or "section.key=" prefix)
std::vector<std::string> complete(const CLI::App& app, const core::PluginCatalog& catalog,
                                  const std::vector<std::string>& words);

}  // namespace flowkit::host
