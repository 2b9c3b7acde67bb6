// One source, several deliberately good or broken plugins for the loader tests
// (selected by FK_VARIANT). Torch-free on purpose: loading must not depend on torch code.
#include "flowkit/plugin.h"

namespace {
class Thing final : public flowkit::Component {};

std::unique_ptr<flowkit::Component> make_thing(const flowkit::Config& cfg, const flowkit::BuildContext&) {
  // The loader tests pass partial configs, hence the fallback (this is no bundled plugin).
  if (cfg.optional<bool>("explode").value_or(false)) throw std::runtime_error("thing exploded as asked");
  return std::make_unique<Thing>();
}

void register_all(flowkit::Registry& r) {
  r.add(flowkit::Kind::model, "thing", make_thing);
#if FK_VARIANT == 3  // mismatch: registers a component the manifest does not declare
  r.add(flowkit::Kind::solver, "undeclared", make_thing);
#elif FK_VARIANT == 4  // registers the same component twice
  r.add(flowkit::Kind::model, "thing", make_thing);
#else
  r.add(flowkit::Kind::path, "other", make_thing);
#endif
}
}  // namespace

#if FK_VARIANT == 0 || FK_VARIANT == 3 || FK_VARIANT == 4
FLOWKIT_PLUGIN(FK_NAME, "1.0.0", register_all)
#elif FK_VARIANT == 1  // wrong API version: built "for" API 99.0
extern "C" __attribute__((visibility("default"))) const flowkit_plugin_descriptor* flowkit_plugin_entry() noexcept {
  static const flowkit_plugin_descriptor d{99, 0, FK_NAME, "1.0.0", &register_all};
  return &d;
}
#elif FK_VARIANT == 2  // no entry symbol at all
extern "C" __attribute__((visibility("default"))) int some_other_symbol() { return 42; }
#endif
