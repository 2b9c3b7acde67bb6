// Entry point of the `crysbfn` plugin module (libcrysbfn.so).
#include "crysbfn/domain.h"
#include "flowkit/plugin.h"

static void register_all(flowkit::Registry& registry) { crysbfn::register_components(registry); }

FLOWKIT_PLUGIN("crysbfn", "0.1.0", register_all)
