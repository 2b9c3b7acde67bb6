// DM1 plugin: mode coverage of the one-step MeanFlow map on a bimodal toy problem.
//
// A correctly trained 1-step MeanFlow map z_0 = z_1 - u(z_1, 0, 1) is a deterministic map of
// the noise, so on data with two equally likely, well separated modes it must send about half
// of the noise draws to each mode. The first round of experiments had every MeanFlow arm on
// one side only; this test pins down the cause and would have caught it.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include "dm1/dm1.h"
#include "flowkit/random.h"
#include "test_util.h"

using namespace dm1;

namespace {

// Two modes (+-0.6, 0.8) with std 0.03, a constant observation (the start-state situation of
// BiReach2D: the observation does not say which side to take).
flowkit::Batch toy_batch(int64_t n, torch::Generator& g) {
  torch::Tensor side = torch::where(flowkit::random::rand({n}, g, torch::kFloat) < 0.5, -1.0, 1.0);
  torch::Tensor x = torch::stack({0.6 * side, torch::full({n}, 0.8)}, 1) + 0.03 * flowkit::random::randn({n, 2}, g, torch::kFloat);
  flowkit::Batch b;
  b.set("x", x.reshape({n, 1, 2}));
  b.set("obs", torch::zeros({n, 3}));
  return b;
}

std::unique_ptr<PolicyModel> toy_policy() {
  PolicyOptions o = policy_options(resolved_config(
      "dm1.policy", {{"hidden", 64}, {"layers", 2}, {"obs_hidden", 16}, {"obs_embed", 8}, {"time_embed", 16}}));
  o.action_dim = 2;
  o.obs_shape = {3};
  torch::manual_seed(0);
  return std::make_unique<PolicyModel>(o, "cpu");
}

// Left fraction of 1-step samples after training with `o`.
double left_fraction_after_training(const MeanFlowOptions& o, int steps) {
  torch::set_num_threads(1);
  auto model = toy_policy();
  MeanFlowLoss loss(o);
  torch::optim::Adam opt(model->module().parameters(), torch::optim::AdamOptions(2e-3));
  auto g = at::detail::createCPUGenerator(3);
  for (int s = 0; s < steps; ++s) {
    auto out = loss.compute(*model, nullptr, toy_batch(256, g), g);
    opt.zero_grad();
    out.loss.backward();
    opt.step();
  }
  model->module().eval();
  MeanFlowSampler solver(1, 1.0);
  flowkit::SampleRequest req;
  req.n = 1000;
  req.item_shape = {1, 2};
  req.cond.set("obs", torch::zeros({req.n, 3}));
  req.options = torch::kFloat;
  auto sg = at::detail::createCPUGenerator(11);
  torch::Tensor x = solver.sample(*model, nullptr, req, sg).x.reshape({req.n, 2});
  double left = (x.select(1, 0) < 0).to(torch::kDouble).mean().item<double>();
  std::cout << "weighting " << o.weighting << " p=" << o.adaptive_p << ": left fraction " << left
            << ", mean |x| " << x.select(1, 0).abs().mean().item<double>() << "\n";
  return left;
}

}  // namespace

// Plain MSE (DM1's setting; the default since the second round): both modes survive the
// 1-step map, and the samples sit on the modes (not on their average at x = 0).
TEST(Dm1Modes, OneStepMeanFlowKeepsBothModesWithMse) {
  // The official MeanFlow ratio, as the figures in the docs.
  MeanFlowOptions o = meanflow_options(resolved_config("dm1.meanflow", {{"ratio_r_neq_t", 0.25}, {"weighting", "mse"}}));
  double left = left_fraction_after_training(o, 400);
  EXPECT_GT(left, 0.3);
  EXPECT_LT(left, 0.7);
}

// The official adaptive weight with p = 1, w = 1 / sg(l + c), makes the per-sample loss a
// bounded l / (l + c): its minimiser for a bimodal target is one mode, not the conditional
// mean, so the velocity field stops being the flow of the data. With low-noise, low-dimensional
// targets (action chunks), this collapses the 1-step map onto one mode.
TEST(Dm1Modes, AdaptiveWeightingWithPowerOneIsModeSeeking) {
  // Official MeanFlow: ratio and weighting.
  MeanFlowOptions o = meanflow_options(
      resolved_config("dm1.meanflow", {{"ratio_r_neq_t", 0.25}, {"weighting", "adaptive"}, {"adaptive_p", 1.0}}));
  double left = left_fraction_after_training(o, 400);
  EXPECT_TRUE(left < 0.2 || left > 0.8) << "left fraction " << left;
}
