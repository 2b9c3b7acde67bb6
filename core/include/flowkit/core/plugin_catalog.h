// flowkit/core/plugin_catalog.h — the plugins on the search path, known from their manifests
// alone. Nothing here loads a library or depends on LibTorch, so `flowkit plugins`, `describe`
// and `validate` start instantly; loading lives in plugin_host.h.
#pragma once
#include <string>
#include <vector>

#include "flowkit/core/manifest.h"

namespace flowkit::core {

struct SearchOptions {
  std::vector<std::string> plugin_paths;  // --plugin-path, highest precedence
  bool use_environment = true;            // FLOWKIT_PLUGIN_PATH (colon-separated)
  bool use_default_dirs = true;           // the install's plugin dir, else the build tree's
};

// The directories searched, in order.
std::vector<std::string> plugin_search_dirs(const SearchOptions& options);

class PluginCatalog {
 public:
  explicit PluginCatalog(const SearchOptions& options = {});
  virtual ~PluginCatalog();
  PluginCatalog(const PluginCatalog&) = delete;
  PluginCatalog& operator=(const PluginCatalog&) = delete;

  // Manifests found (reading JSON only; nothing is dlopen'ed).
  const std::vector<PluginManifest>& plugins() const { return plugins_; }
  // Manifests that could not be read (kept so `flowkit plugins` can show them).
  const std::vector<std::string>& manifest_errors() const { return manifest_errors_; }
  const std::vector<std::string>& search_dirs() const { return dirs_; }

  // The declared component "plugin.name", or an error with a did-you-mean suggestion.
  Expected<const ComponentSpec*> find(const std::string& type) const;
  std::vector<std::string> component_types() const;

 protected:
  // The one manifest of `plugin`; null with *error set when none or two are found.
  const PluginManifest* manifest_of(const std::string& plugin, std::string* error) const;

 private:
  std::vector<std::string> dirs_;
  std::vector<PluginManifest> plugins_;
  std::vector<std::string> manifest_errors_;
};

// " (did you mean 'x'?)" for the closest candidate, or "" when none is close.
std::string did_you_mean(const std::string& word, const std::vector<std::string>& candidates);
std::string sha256_file(const std::string& path);
bool debug_plugins_enabled();

}  // namespace flowkit::core
