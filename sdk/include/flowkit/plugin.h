// flowkit/plugin.h — the plugin entry point: one extern "C" symbol returning a versioned
// descriptor. This header does not include LibTorch.
#pragma once
#include <cstdint>

#include "flowkit/registry.h"
#include "flowkit/version.h"

extern "C" {
// The two version fields come first, in every API version, so that the host can check them
// before touching anything else; the rest of the layout is fixed within one API major.
struct flowkit_plugin_descriptor {
  std::uint32_t api_major;
  std::uint32_t api_minor;
  const char* name;      // must equal plugin.json "name"
  const char* version;   // must equal plugin.json "version"
  void (*register_components)(flowkit::Registry& registry);
};
}

#define FLOWKIT_ENTRY_SYMBOL "flowkit_plugin_entry"

// Use exactly once per plugin, at namespace scope:
//   static void register_all(flowkit::Registry& r) { r.add(flowkit::Kind::model, "mlp", make_mlp); }
//   FLOWKIT_PLUGIN("myplugin", "1.2.0", register_all)
// The version fields are taken from the SDK headers the plugin was compiled against.
#define FLOWKIT_PLUGIN(NAME, VERSION, REGISTER_FN)                                         \
  extern "C" __attribute__((visibility("default"))) const flowkit_plugin_descriptor*      \
  flowkit_plugin_entry() noexcept {                                                        \
    static const flowkit_plugin_descriptor descriptor{FLOWKIT_API_MAJOR, FLOWKIT_API_MINOR, \
                                                      NAME, VERSION, &REGISTER_FN};        \
    return &descriptor;                                                                    \
  }
