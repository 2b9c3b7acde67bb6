// Entry point of the `pfgmpp` plugin module (libpfgmpp.so).
#include "flowkit/plugin.h"
#include "pfgmpp/pfgmpp.h"

static void register_all(flowkit::Registry& registry) { pfgmpp::register_components(registry); }

FLOWKIT_PLUGIN("pfgmpp", "0.1.0", register_all)
