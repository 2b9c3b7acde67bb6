// flowkit/core/conformance.h — the interface and capability checks every plugin must pass,
// runnable on any plugin (`flowkit conformance [PLUGIN...]`), bundled or third-party.
#pragma once
#include <string>
#include <vector>

#include "flowkit/core/plugin_host.h"

namespace flowkit::core {

struct ConformanceCheck {
  std::string component;  // "<plugin>.<component>"
  std::string check;      // "builds", "reads its declared parameters", "capability ode_integrator", ...
  bool passed = false;
  std::string detail;     // why it failed
};

struct ConformanceReport {
  std::vector<ConformanceCheck> checks;
  int failures() const;
  std::string text() const;  // one line per check: PASS/FAIL component: check (detail)
};

// Builds every component of `plugins` (empty: every plugin found) from its manifest defaults
// in a context of the plugin's own first domain, path and model (else the first ones found on
// the search path), and checks its kind's contract, that the factory reads exactly the keys
// its manifest declares, and each capability it claims. Never throws for a plugin's fault.
ConformanceReport run_conformance(PluginHost& host, const std::vector<std::string>& plugins = {});

}  // namespace flowkit::core
