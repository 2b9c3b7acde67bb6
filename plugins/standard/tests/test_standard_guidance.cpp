// Guidance stages against closed forms: classifier-free guidance of exact Gaussian velocities
// (its guided flow is again a Gaussian flow, with the extrapolated mean), the guidance
// interval, the network-evaluation count, and the box objective's gradient.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include "flowkit/error.h"
#include "flowkit/guidance.h"
#include "standard/affine_path.h"
#include "standard/guidance.h"
#include "standard/ode_solvers.h"
#include "test_util.h"

using namespace standard;

namespace {

torch::Generator make_gen(uint64_t seed) { return at::detail::createCPUGenerator(seed); }
flowkit::Config cfg(const std::string& type, nlohmann::json j = nlohmann::json::object()) { return resolved_config(type, j); }

// The exact marginal velocity of the CondOT path for data N(mu_label, c^2 I); label K (the
// null class) has mean mu_null. Linear in mu, so v_null + w (v_k - v_null) is the exact
// velocity of N(mu_null + w (mu_k - mu_null), c^2 I).
class ClassGaussianVelocity : public flowkit::Model {
 public:
  ClassGaussianVelocity(torch::Tensor means, double c) : means_(std::move(means)), c_(c) {}
  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& t, const flowkit::Conditioning& cond) override {
    ++calls;
    items += x.size(0);
    torch::Tensor mu = means_.index_select(0, cond.at("label").to(torch::kLong).reshape({-1}));
    torch::Tensor a = t.to(x.scalar_type()).reshape({-1, 1}), s = 1 - a;
    torch::Tensor V = a * a * c_ * c_ + s * s, r = x - a * mu;
    return (mu + a * c_ * c_ * r / V) - s * r / V;
  }
  torch::nn::Module& module() override { return module_; }
  int64_t calls = 0, items = 0;

 private:
  torch::Tensor means_;  // [K + 1, D], the last row the null class
  double c_;
  torch::nn::Module module_;
};

AffinePath condot() { return AffinePath(make_scheduler(scheduler_options(cfg("standard.affine", {{"scheduler", "condot"}})))); }

}  // namespace

TEST(StandardGuidance, ClassifierFreeGuidanceExtrapolatesTheGaussianMean) {
  // Two classes and the null class; every sample asks for class 1.
  torch::Tensor means = torch::tensor({{2.0, -1.0}, {-1.0, 1.5}, {0.5, 0.25}}, torch::kDouble);
  const double c = 0.5;
  ClassGaussianVelocity model(means, c);
  AffinePath path = condot();
  flowkit::SampleRequest req;
  req.n = 20000;
  req.item_shape = {2};
  req.options = torch::TensorOptions().dtype(torch::kDouble);
  req.cond.set("label", torch::ones({req.n}, torch::kLong));
  FixedStepSolver rk4("rk4", &rk4_step, read_grid_options(cfg("standard.rk4", {{"steps", 40}})));
  for (double w : {0.0, 1.0, 2.5}) {
    SCOPED_TRACE(w);
    ClassifierFreeGuidance cfg_guide({w, 0.0, 1.0, /*null_label=*/2});
    flowkit::GuidedModel guided(model, cfg_guide, &path);
    auto gen = make_gen(3);
    model.calls = 0;
    flowkit::SolveResult r = rk4.sample(guided, &path, req, gen);
    torch::Tensor expected = means[2] + w * (means[1] - means[2]);
    EXPECT_LT((r.x.mean(0) - expected).abs().max().item<double>(), 0.02) << r.x.mean(0);
    EXPECT_LT((r.x.std(0) - c).abs().max().item<double>(), 0.02);
    // One batched pass per solver evaluation, counted as two network evaluations per item.
    EXPECT_EQ(r.nfe, 160);
    EXPECT_EQ(model.calls, 160);
    EXPECT_EQ(guided.evaluations(), w == 1.0 ? 160 : 320);  // scale 1 needs no null-class pass
  }
}

TEST(StandardGuidance, TheIntervalLimitsWhereGuidanceActs) {
  torch::Tensor means = torch::tensor({{2.0, -1.0}, {0.0, 0.0}}, torch::kDouble);
  ClassGaussianVelocity model(means, 0.5);
  AffinePath path = condot();
  torch::Tensor x = torch::randn({6, 2}, torch::kDouble);
  torch::Tensor t = torch::tensor({0.1, 0.2, 0.4, 0.5, 0.7, 0.9}, torch::kDouble);
  flowkit::Conditioning cond;
  cond.set("label", torch::zeros({6}, torch::kLong));
  flowkit::Conditioning null;
  null.set("label", torch::ones({6}, torch::kLong));
  const double w = 3.0;
  ClassifierFreeGuidance windowed({w, 0.3, 0.6, 1});
  int64_t evaluations = 0;
  torch::Tensor v = windowed.velocity(model, &path, x, t, cond, &evaluations);
  torch::Tensor v_label = model.forward(x, t, cond), v_null = model.forward(x, t, null);
  torch::Tensor inside = ((t >= 0.3) & (t <= 0.6)).reshape({-1, 1});
  torch::Tensor expected = torch::where(inside, v_null + w * (v_label - v_null), v_label);
  EXPECT_LT((v - expected).abs().max().item<double>(), 1e-12);
  EXPECT_EQ(evaluations, 2);
  // Entirely outside the interval: one plain conditional evaluation.
  ClassifierFreeGuidance late({w, 0.95, 1.0, 1});
  EXPECT_LT((late.velocity(model, &path, x, t, cond, &evaluations) - v_label).abs().max().item<double>(), 1e-12);
  EXPECT_EQ(evaluations, 1);
  // Without labels there is nothing to guide: an error, not a silent unguided sample.
  EXPECT_THROW(windowed.velocity(model, &path, x, t, flowkit::Conditioning{}, &evaluations), flowkit::Error);
}

TEST(StandardGuidance, BoxObjectiveGradientIsTheDistanceToTheBox) {
  torch::Tensor means = torch::tensor({{2.0, -1.0}}, torch::kDouble);
  ClassGaussianVelocity model(means, 0.5);
  AffinePath path = condot();
  torch::Tensor x = torch::randn({64, 2}, torch::kDouble) * 2;
  torch::Tensor t = torch::rand({64}, torch::kDouble) * 0.9;
  flowkit::Conditioning cond;
  cond.set("label", torch::zeros({64}, torch::kLong));
  const double scale = 0.7;
  BoxGuidance box({scale, 0.0, 1.0}, {-0.5, 0.0}, {0.5, 0.25});
  int64_t evaluations = 0;
  torch::NoGradGuard no_grad;  // as the host samples: the guidance enables autograd itself
  torch::Tensor v_box = box.velocity(model, &path, x, t, cond, &evaluations);
  torch::Tensor v = model.forward(x, t, cond);
  torch::Tensor x_hat = path.velocity_to_data(v, x, t);
  // d/dx̂ of ½ dist(x̂, box)^2 = x̂ − clamp(x̂, low, high).
  torch::Tensor clamped = torch::stack({x_hat.select(1, 0).clamp(-0.5, 0.5), x_hat.select(1, 1).clamp(0.0, 0.25)}, 1);
  EXPECT_LT((v_box - (v - scale * (x_hat - clamped))).abs().max().item<double>(), 1e-10);
  EXPECT_EQ(evaluations, 1);
  EXPECT_FALSE(v_box.requires_grad());

  // End to end through a solver: guidance moves the samples towards the box that the
  // unguided flow (data N((2, -1), 0.25 I)) leaves almost empty.
  FixedStepSolver euler("euler", &euler_step, read_grid_options(cfg("standard.euler", {{"steps", 50}})));
  flowkit::SampleRequest req;
  req.n = 4000;
  req.item_shape = {2};
  req.options = torch::TensorOptions().dtype(torch::kDouble);
  req.cond.set("label", torch::zeros({req.n}, torch::kLong));
  BoxGuidance strong({8.0, 0.0, 1.0}, {-0.5, 0.0}, {0.5, 0.25});
  flowkit::GuidedModel guided(model, strong, &path);
  auto g1 = make_gen(5), g2 = make_gen(5);
  auto distance = [](const torch::Tensor& s) {
    torch::Tensor c = torch::stack({s.select(1, 0).clamp(-0.5, 0.5), s.select(1, 1).clamp(0.0, 0.25)}, 1);
    return (s - c).norm(2, 1).mean().item<double>();
  };
  const double plain = distance(euler.sample(model, &path, req, g1).x);
  const double steered = distance(euler.sample(guided, &path, req, g2).x);
  std::cout << "[ measured ] mean distance to the box: unguided " << plain << ", box guidance " << steered << "\n";
  EXPECT_GT(plain, 1.5);
  EXPECT_LT(steered, 0.2 * plain);
}

TEST(StandardGuidance, FactoriesCheckTheirContext) {
  flowkit::BuildContext none;
  EXPECT_THROW(make_cfg(cfg("standard.cfg"), none), flowkit::ConfigError);       // no labelled domain
  EXPECT_THROW(make_box_guidance(cfg("standard.box"), none), flowkit::ConfigError);  // no path
  AffinePath path = condot();
  flowkit::BuildContext with_path;
  with_path.path = &path;
  EXPECT_NO_THROW(make_box_guidance(cfg("standard.box"), with_path));
  EXPECT_THROW(make_box_guidance(cfg("standard.box", {{"low", {0.0, 0.0}}, {"high", {1.0}}}), with_path), flowkit::ConfigError);
  EXPECT_THROW(make_box_guidance(cfg("standard.box", {{"t_min", 0.8}, {"t_max", 0.2}}), with_path), flowkit::ConfigError);
}
