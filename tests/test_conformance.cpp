// Conformance: every plugin on the build tree's search path passes the interface and
// capability checks of flowkit/core/conformance.h (what `flowkit conformance` runs).
#include <gtest/gtest.h>
#include <torch/torch.h>

#include "flowkit/core/conformance.h"
#include "flowkit/core/plugin_host.h"
#include "flowkit/flowkit.h"
#include "test_util.h"

using namespace flowkit;
using namespace flowkit::core;

TEST(Conformance, EveryPluginOnTheBuildTreePasses) {
  PluginHost host(build_tree_only());
  if (host.plugins().empty()) GTEST_SKIP() << "built without bundled plugins (the test plugins are checked in test_capabilities)";
  ConformanceReport report = run_conformance(host);
  EXPECT_EQ(report.failures(), 0) << report.text();
  // Every kind has implementations, and the read-keys check ran for each component.
  for (const auto& k : kinds()) {
    bool found = false;
    for (const auto& m : host.plugins())
      for (const auto& c : m.components) found |= c.kind == k.kind;
    EXPECT_TRUE(found) << k.name;
  }
  size_t read_checks = 0;
  for (const auto& c : report.checks) read_checks += c.check == "reads exactly the parameters its manifest declares";
  size_t components = 0;
  for (const auto& m : host.plugins()) components += m.components.size();
  EXPECT_EQ(read_checks, components);
}

TEST(Conformance, UnknownPluginIsReportedNotThrown) {
  PluginHost host(build_tree_only());
  ConformanceReport report = run_conformance(host, {"no_such_plugin"});
  ASSERT_EQ(report.failures(), 1);
  EXPECT_THAT_MSG(report.text(), "no plugin named 'no_such_plugin'");
}

// The SDK's explicit Euler integrator (flowkit::euler_integrate, for samplers that take Euler
// steps of their own): dx/dt = x on a 4-step grid is (1 + h)^4 forwards, (1 - h)^4 backwards.
TEST(SdkHelpers, EulerIntegrateMatchesTheClosedForm) {
  const VectorField f = [](const torch::Tensor& x, const torch::Tensor&) { return x; };
  const torch::Tensor x0 = torch::full({3}, 2.0, torch::kDouble);
  SolveResult fwd = euler_integrate(f, x0, torch::linspace(0, 1, 5, torch::kDouble), true);
  EXPECT_EQ(fwd.nfe, 4);
  ASSERT_EQ(fwd.intermediates.size(), 5u);
  EXPECT_NEAR(fwd.x[0].item<double>(), 2.0 * std::pow(1.25, 4), 1e-12);
  EXPECT_NEAR(fwd.intermediates[2][1].item<double>(), 2.0 * 1.25 * 1.25, 1e-12);
  SolveResult bwd = euler_integrate(f, x0, torch::linspace(1, 0, 5, torch::kDouble));
  EXPECT_NEAR(bwd.x[2].item<double>(), 2.0 * std::pow(0.75, 4), 1e-12);
  EXPECT_TRUE(bwd.intermediates.empty());
  EXPECT_THROW(euler_integrate(f, x0, torch::zeros({2, 2}, torch::kDouble)), Error);
}
