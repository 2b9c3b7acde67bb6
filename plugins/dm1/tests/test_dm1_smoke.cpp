// DM1 plugin: a smoke training run (fixed seeds) in which a 1-step MeanFlow policy beats
// behaviour-cloning regression on rollout success, because regression averages the two
// modes of the expert into the obstacle.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <chrono>

#include "dm1/dm1.h"
#include "test_util.h"

using namespace dm1;

namespace {

std::unique_ptr<PolicyModel> policy_for(const BiReachDomain& d) {
  PolicyOptions o = policy_options(resolved_config(
      "dm1.policy", {{"hidden", 128}, {"layers", 2}, {"obs_hidden", 64}, {"obs_embed", 32}, {"time_embed", 16}}));
  o.action_dim = 16;
  o.obs_shape = {4 + d.options().env.goals};
  torch::manual_seed(0);
  return std::make_unique<PolicyModel>(o, "cpu");
}

void train(flowkit::Model& model, flowkit::Loss& loss, BiReachDomain& d, int steps, uint64_t seed) {
  torch::optim::AdamW opt(model.module().parameters(), torch::optim::AdamWOptions(2e-3).weight_decay(0.0));
  auto g = at::detail::createCPUGenerator(seed);
  model.module().train();
  for (int s = 0; s < steps; ++s) {
    auto out = loss.compute(model, nullptr, d.train_batch(128, g), g);
    opt.zero_grad();
    out.loss.backward();
    torch::nn::utils::clip_grad_norm_(model.module().parameters(), 1.0);
    opt.step();
  }
  model.module().eval();
}

double success(const BiReachDomain& d, flowkit::Model& model, const flowkit::Solver& solver, uint64_t seed,
               nlohmann::json* full = nullptr) {
  flowkit::Policy policy = [&](const flowkit::Conditioning& obs, torch::Generator& g) {
    flowkit::SampleRequest req;
    req.n = obs.at("obs").size(0);
    req.item_shape = {8, 2};
    req.cond = obs;
    req.options = torch::kFloat;
    return solver.sample(model, nullptr, req, g).x;
  };
  auto g = at::detail::createCPUGenerator(seed);
  nlohmann::json r = d.rollout(policy, {"energy"}, g);
  if (full) *full = r;
  return r.at("success").get<double>();
}

}  // namespace

TEST(Dm1Smoke, OneStepMeanFlowBeatsRegression) {
  torch::set_num_threads(1);
  auto t0 = std::chrono::steady_clock::now();
  BiReachDomain d(domain_options(resolved_config("dm1.bireach", {{"demos", 100}, {"heldout_demos", 10}, {"rollouts", 100}})));

  auto reg = policy_for(d);
  RegressionLoss reg_loss;
  train(*reg, reg_loss, d, 600, 1);
  nlohmann::json rr, rm;
  double s_reg = success(d, *reg, DirectSampler(1.0), 5, &rr);

  auto mf = policy_for(d);
  // The adaptive weight with p = 1 is mode-seeking (test_dm1_modes.cpp).
  MeanFlowLoss mf_loss(meanflow_options(resolved_config("dm1.meanflow", {{"weighting", "mse"}})));
  train(*mf, mf_loss, d, 1200, 1);
  double s_mf = success(d, *mf, MeanFlowSampler(1, 1.0), 5, &rm);

  double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  std::cout << "regression: " << rr.dump() << "\nmeanflow-1: " << rm.dump() << "\n(" << secs << " s)\n";
  EXPECT_GT(s_mf, s_reg + 0.2);
  EXPECT_GT(rr.at("collision").get<double>(), rm.at("collision").get<double>());
  // Both modes are used (the first round's adaptive-weighted policies passed left 0 % of the time).
  EXPECT_GT(rm.at("left_fraction").get<double>(), 0.15);
  EXPECT_LT(rm.at("left_fraction").get<double>(), 0.85);
}
