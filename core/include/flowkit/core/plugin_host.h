// flowkit/core/plugin_host.h — the catalog plus loading: libraries are loaded on first use,
// checked in a fixed order, kept loaded for the life of the process, and build components.
#pragma once
#include <map>
#include <memory>
#include <string>

#include "flowkit/core/plugin_catalog.h"
#include "flowkit/registry.h"

namespace flowkit::core {

class PluginHost : public PluginCatalog {
 public:
  explicit PluginHost(const SearchOptions& options = {});
  ~PluginHost() override;

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
  std::map<std::string, std::string> pins_;
  std::map<std::string, Factories> loaded_;  // by plugin name; libraries stay mapped forever
};

}  // namespace flowkit::core
