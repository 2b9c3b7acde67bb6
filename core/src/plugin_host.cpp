// Plugin loading: lazy, with checks in a fixed order, pinning; libraries never unloaded.
#include "flowkit/core/plugin_host.h"

#include <boost/dll/runtime_symbol_info.hpp>

#include <filesystem>
#include <fstream>
#include <set>

#include <fmt/ranges.h>

#include "dll_compat.h"
#include "flowkit/plugin.h"
#include "trace.h"

namespace fs = std::filesystem;

namespace flowkit::core {

// Loaded libraries stay mapped for the life of the process (LibTorch plugins crash on
// unload, pytorch#46171, #61111), so their handles are deliberately leaked.
static std::vector<boost::dll::shared_library>& pinned_libraries() {
  static auto* libs = new std::vector<boost::dll::shared_library>();  // never destroyed
  return *libs;
}

PluginHost::PluginHost(const SearchOptions& options) : PluginCatalog(options) {}
PluginHost::~PluginHost() = default;

void PluginHost::pin_sha256(const std::string& plugin, const std::string& sha256_hex) { pins_[plugin] = sha256_hex; }

bool PluginHost::is_loaded(const std::string& plugin) const { return loaded_.count(plugin) != 0; }

namespace {
// Collects what the plugin registers.
class CollectingRegistry final : public Registry {
 public:
  std::map<std::pair<Kind, std::string>, Factory> factories;
  std::vector<std::string> duplicates;
  void add(Kind kind, const std::string& name, Factory factory) override {
    if (!factories.emplace(std::make_pair(kind, name), std::move(factory)).second)
      duplicates.push_back(std::string(kind_name(kind)) + " '" + name + "'");
  }
};

std::string list_of(const std::set<std::string>& s) {
  return s.empty() ? std::string("(none)") : fmt::format("{}", fmt::join(s, ", "));
}

bool has_elf_magic(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  char m[4] = {};
  in.read(m, 4);
  return in && m[0] == 0x7f && m[1] == 'E' && m[2] == 'L' && m[3] == 'F';
}
}  // namespace

Expected<bool> PluginHost::load(const std::string& plugin) {
  using R = Expected<bool>;
  if (is_loaded(plugin)) return true;
  std::string error;
  const PluginManifest* m = manifest_of(plugin, &error);
  if (!m) return R::failure(error);
  const std::string lib_path = m->library_path();
  const std::string where = "plugin '" + plugin + "' (" + m->file + ")";
  trace("loading {} from {}", plugin, lib_path);

  std::error_code ec;
  if (!fs::is_regular_file(lib_path, ec))
    return R::failure(where + ": library file '" + lib_path + "' does not exist");
  if (auto pin = pins_.find(plugin); pin != pins_.end()) {
    std::string actual = sha256_file(lib_path);
    trace("  sha256 {} (pinned {})", actual, pin->second);
    if (actual != pin->second)
      return R::failure(where + ": sha256 mismatch for '" + lib_path + "': pinned " + pin->second + ", found " + actual +
                        "; refusing to load");
  }
  if (!has_elf_magic(lib_path)) return R::failure(where + ": '" + lib_path + "' is not a shared object (no ELF header)");

  boost::dll::shared_library lib;
  try {
    lib.load(lib_path);  // RTLD_LAZY | RTLD_LOCAL
  } catch (const std::exception& e) {
    return R::failure(where + ": cannot load '" + lib_path + "': " + e.what());
  }
  if (!lib.has(FLOWKIT_ENTRY_SYMBOL))
    return R::failure(where + ": '" + lib_path + "' has no entry symbol '" FLOWKIT_ENTRY_SYMBOL
                      "'; was it built with FLOWKIT_PLUGIN(...)?");
  auto entry = dll::import_symbol<const flowkit_plugin_descriptor*()>(lib, FLOWKIT_ENTRY_SYMBOL);
  const flowkit_plugin_descriptor* d = entry();
  pinned_libraries().push_back(lib);  // keep mapped forever from here on
  if (!d) return R::failure(where + ": entry symbol returned no descriptor");
  // The version fields are read before anything else in the descriptor.
  if (d->api_major != FLOWKIT_API_MAJOR || d->api_minor > FLOWKIT_API_MINOR)
    return R::failure(fmt::format("{}: wrong plugin API version in '{}': expected {}.x with x <= {}, found {}.{}", where,
                                  lib_path, FLOWKIT_API_MAJOR, FLOWKIT_API_MINOR, d->api_major, d->api_minor));
  trace("  API version {}.{} accepted", d->api_major, d->api_minor);
  if (m->api_major != d->api_major || m->api_minor != d->api_minor)
    return R::failure(fmt::format("{}: manifest declares API {}.{} but the library was built for {}.{}", where, m->api_major,
                                  m->api_minor, d->api_major, d->api_minor));
  if (std::string(d->name ? d->name : "") != m->name || std::string(d->version ? d->version : "") != m->version)
    return R::failure(fmt::format("{}: the library identifies as '{}' {} but the manifest says '{}' {}", where,
                                  d->name ? d->name : "", d->version ? d->version : "", m->name, m->version));
  CollectingRegistry registry;
  try {
    d->register_components(registry);
  } catch (const std::exception& e) {
    return R::failure(where + ": registering components failed: " + e.what());
  } catch (...) {
    return R::failure(where + ": registering components failed with an unknown exception");
  }
  if (!registry.duplicates.empty())
    return R::failure(where + ": the library registers the same component twice: " +
                      fmt::format("{}", fmt::join(registry.duplicates, ", ")));
  std::set<std::string> declared, registered;
  for (const auto& c : m->components) declared.insert(std::string(kind_name(c.kind)) + " " + c.name);
  for (const auto& [key, f] : registry.factories) registered.insert(std::string(kind_name(key.first)) + " " + key.second);
  if (declared != registered)
    return R::failure(where + ": components registered by the library differ from the manifest: manifest declares [" +
                      list_of(declared) + "], library registers [" + list_of(registered) + "]");
  trace("  loaded {} with {} components", plugin, registry.factories.size());
  loaded_[plugin] = std::move(registry.factories);
  return true;
}

std::unique_ptr<Component> PluginHost::create(Kind kind, const Config& cfg, const BuildContext& ctx) {
  std::string type = cfg.get<std::string>("type");
  auto spec = find(type);
  if (!spec) throw ConfigError(cfg.file(), cfg.pointer_to("type"), spec.error());
  if ((*spec)->kind != kind)
    throw ConfigError(cfg.file(), cfg.pointer_to("type"),
                      "'" + type + "' is a " + kind_name((*spec)->kind) + ", expected a " + kind_name(kind));
  auto ok = load((*spec)->plugin);
  if (!ok) throw Error(ok.error());
  const Factories& factories = loaded_.at((*spec)->plugin);
  const Factory& factory = factories.at({kind, (*spec)->name});
  BuildContext own = ctx;  // the building plugin's own folder, for its data files
  std::string why;
  if (const PluginManifest* m = manifest_of((*spec)->plugin, &why)) own.plugin_dir = m->dir;
  std::unique_ptr<Component> component;
  try {
    component = factory(cfg, own);
  } catch (const ConfigError&) {
    throw;
  } catch (const std::exception& e) {
    throw ConfigError(cfg.file(), cfg.pointer(), "component '" + type + "' failed to build: " + e.what());
  } catch (...) {
    throw ConfigError(cfg.file(), cfg.pointer(), "component '" + type + "' failed to build (unknown exception)");
  }
  if (!component) throw ConfigError(cfg.file(), cfg.pointer(), "component '" + type + "' factory returned nothing");
  if (!implements_interface(kind, *component))
    throw ConfigError(cfg.file(), cfg.pointer_to("type"), "component '" + type + "' does not implement the " +
                                                              kind_info(kind).interface_name + " interface");
  return component;
}

}  // namespace flowkit::core
