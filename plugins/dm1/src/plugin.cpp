// Entry point of the `dm1` plugin module (libdm1.so).
#include "dm1/dm1.h"
#include "flowkit/plugin.h"

static void register_all(flowkit::Registry& registry) { dm1::register_components(registry); }

FLOWKIT_PLUGIN("dm1", "0.1.0", register_all)
