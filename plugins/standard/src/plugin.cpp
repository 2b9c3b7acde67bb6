// Entry point of the `standard` plugin module (libstandard.so).
#include "flowkit/plugin.h"
#include "standard/register.h"

static void register_all(flowkit::Registry& registry) { standard::register_components(registry); }

FLOWKIT_PLUGIN("standard", "0.1.0", register_all)
