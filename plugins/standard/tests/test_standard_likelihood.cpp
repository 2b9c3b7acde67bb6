// Likelihoods by the instantaneous change of variables (flowkit/likelihood.h) through the
// standard solvers: against the closed-form density of a Gaussian path, a finite-difference
// Jacobian trace, Hutchinson's expectation, closed-form gradients, and end to end in eval.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cmath>
#include <filesystem>
#include <fstream>

#include "flowkit/core/pipeline.h"
#include "flowkit/core/session.h"
#include "flowkit/io.h"
#include "flowkit/likelihood.h"
#include "standard/affine_path.h"
#include "standard/ode_solvers.h"
#include "test_util.h"

using namespace standard;
namespace fs = std::filesystem;

namespace {
torch::Generator make_gen(uint64_t seed) { return at::detail::createCPUGenerator(seed); }
const auto kD = torch::TensorOptions().dtype(torch::kDouble);

// The exact marginal velocity of the CondOT path from N(0, I) to N(mu, s² I):
// x_t ~ N(t mu, σ_t² I), σ_t² = (1 − t)² + t² s², v = mu + (t s² − (1 − t)) / σ_t² · (x − t mu).
struct GaussianFlow {
  torch::Tensor mu;  // [D], may require grad
  double s;
  torch::Tensor operator()(const torch::Tensor& x, const torch::Tensor& t_in) const {
    const torch::Tensor t = t_in.dim() == 0 ? t_in : t_in.reshape({-1, 1});
    const torch::Tensor var = (1 - t).pow(2) + t.pow(2) * s * s;
    return mu + (t * s * s - (1 - t)) / var * (x - t * mu);
  }
  torch::Tensor log_density(const torch::Tensor& x) const {
    const double d = static_cast<double>(x.size(1));
    return -0.5 * (x - mu).pow(2).sum(1) / (s * s) - d * std::log(s) - 0.5 * d * std::log(2 * M_PI);
  }
};

struct StandardNormal : flowkit::PriorDensity {
  torch::Tensor prior_log_density(const torch::Tensor& x) const override { return flowkit::standard_normal_log_density(x); }
};

std::unique_ptr<flowkit::Component> solver(const std::string& type, int steps) {
  flowkit::BuildContext ctx;
  if (type == "dopri5") return make_dopri5(resolved_config("standard.dopri5", {{"atol", 1e-9}, {"rtol", 1e-9}}), ctx);
  auto cfg = resolved_config("standard." + type, {{"steps", steps}});
  if (type == "rk4") return make_rk4(cfg, ctx);
  return make_euler(cfg, ctx);
}
const flowkit::OdeIntegrator& integrator(const std::unique_ptr<flowkit::Component>& c) {
  return *dynamic_cast<const flowkit::OdeIntegrator*>(c.get());
}
}  // namespace

// Data and samples: the reverse and the forward solve both give the closed-form density.
TEST(Likelihood, GaussianPathMatchesTheClosedFormDensity) {
  auto g = make_gen(0);
  GaussianFlow flow{torch::tensor({1.0, -2.0, 0.5}, kD), 0.6};
  StandardNormal prior;
  auto rk4 = solver("rk4", 200);
  const torch::Tensor grid = integrator(rk4).grid(0).to(torch::kDouble);
  torch::Tensor x = flow.mu + flow.s * torch::randn({256, 3}, g, kD);
  flowkit::FlowLikelihood data = flowkit::data_log_likelihood(flow, prior, integrator(rk4), grid, x, {}, g);
  EXPECT_LT((data.log_likelihood - flow.log_density(x)).abs().max().item<double>(), 1e-6);
  // The reverse solve lands on the prior: x_0 = (x − mu) / s for this flow.
  EXPECT_LT((data.x - (x - flow.mu) / flow.s).abs().max().item<double>(), 1e-6);
  // Adaptive Dormand–Prince through the same API.
  auto dp = solver("dopri5", 0);
  flowkit::FlowLikelihood adaptive = flowkit::data_log_likelihood(flow, prior, integrator(dp), torch::tensor({0.0, 1.0}, kD), x, {}, g);
  EXPECT_LT((adaptive.log_likelihood - flow.log_density(x)).abs().max().item<double>(), 1e-5);

  // One forward solve: the samples and their log-likelihood, with one solve's NFE.
  torch::Tensor x0 = torch::randn({256, 3}, g, kD);
  flowkit::FlowLikelihood samples = flowkit::sample_log_likelihood(flow, prior, integrator(rk4), grid, x0, {}, g);
  EXPECT_EQ(samples.nfe, 4 * 200);
  EXPECT_LT((samples.x - (flow.mu + flow.s * x0)).abs().max().item<double>(), 1e-6);
  EXPECT_LT((samples.log_likelihood - flow.log_density(samples.x)).abs().max().item<double>(), 1e-6);
}

// The exact divergence is the Jacobian's trace: one backward Euler step from t = 1 gives
// log p = log p_0(x − f(x, 1)) − tr ∂f/∂x, the trace checked by central differences on an MLP.
TEST(Likelihood, ExactDivergenceIsTheFiniteDifferenceTrace) {
  torch::manual_seed(1);
  torch::nn::Sequential net(torch::nn::Linear(5, 32), torch::nn::Tanh(), torch::nn::Linear(32, 4));
  net->to(torch::kDouble);
  auto field = [&](const torch::Tensor& x, const torch::Tensor& t) {
    return net->forward(torch::cat({x, t.expand({x.size(0), 1}).to(x.dtype())}, 1));
  };
  auto g = make_gen(1);
  torch::Tensor x = torch::randn({16, 4}, g, kD);
  StandardNormal prior;
  auto euler = solver("euler", 1);
  flowkit::FlowLikelihood r = flowkit::data_log_likelihood(field, prior, integrator(euler), torch::tensor({0.0, 1.0}, kD), x, {}, g);
  torch::NoGradGuard no_grad;
  const torch::Tensor one = torch::scalar_tensor(1.0, kD);
  torch::Tensor trace = torch::zeros({16}, kD);
  const double h = 1e-5;
  for (int64_t i = 0; i < 4; ++i) {
    torch::Tensor e = torch::zeros({1, 4}, kD);
    e[0][i] = h;
    trace += (field(x + e, one) - field(x - e, one)).select(1, i) / (2 * h);
  }
  const torch::Tensor expected = prior.prior_log_density(x - field(x, one)) - trace;
  EXPECT_LT((r.log_likelihood - expected).abs().max().item<double>(), 1e-7);
}

// Hutchinson's estimate is unbiased: on a field with a non-symmetric, non-diagonal Jacobian
// its mean over probes approaches the exact divergence; the probes follow the generator.
TEST(Likelihood, HutchinsonIsUnbiasedAndSeeded) {
  const torch::Tensor A = torch::tensor({0.3, -1.2, 0.4, 0.9, -0.5, 0.2, -0.7, 0.1, 0.8}, kD).reshape({3, 3});
  auto field = [&](const torch::Tensor& x, const torch::Tensor& t) { return torch::tanh(x.mm(A.t())) * (1 + t); };
  StandardNormal prior;
  auto rk4 = solver("rk4", 10);
  const torch::Tensor grid = integrator(rk4).grid(0).to(torch::kDouble);
  auto g0 = make_gen(2);
  torch::Tensor x = torch::randn({64, 3}, g0, kD);
  auto ge = make_gen(3);
  const torch::Tensor exact = flowkit::data_log_likelihood(field, prior, integrator(rk4), grid, x, {}, ge).log_likelihood;
  auto gh = make_gen(4);
  flowkit::FlowLikelihood many = flowkit::data_log_likelihood(field, prior, integrator(rk4), grid, x, flowkit::divergence_options("hutchinson", 4000), gh);
  EXPECT_LT((many.log_likelihood - exact).abs().max().item<double>(), 0.05);
  auto ga = make_gen(9), gb = make_gen(9), gc = make_gen(10);
  const auto one = flowkit::divergence_options("hutchinson");
  torch::Tensor a = flowkit::data_log_likelihood(field, prior, integrator(rk4), grid, x, one, ga).log_likelihood;
  torch::Tensor b = flowkit::data_log_likelihood(field, prior, integrator(rk4), grid, x, one, gb).log_likelihood;
  torch::Tensor c = flowkit::data_log_likelihood(field, prior, integrator(rk4), grid, x, one, gc).log_likelihood;
  EXPECT_TRUE(torch::equal(a, b));
  EXPECT_GT((a - c).abs().max().item<double>(), 1e-3);  // another seed, other probes
  EXPECT_THROW(flowkit::divergence_options("trace"), flowkit::Error);
}

// With grad mode on, the solve is differentiable: d/dmu and d/dx of the log-likelihood match
// the closed form's, (x − mu)/s² and −(x − mu)/s².
TEST(Likelihood, GradientsThroughTheSolveMatchTheClosedForm) {
  auto g = make_gen(5);
  torch::Tensor mu = torch::tensor({0.5, -1.0}, kD).requires_grad_(true);
  GaussianFlow flow{mu, 0.8};
  StandardNormal prior;
  auto rk4 = solver("rk4", 100);
  const torch::Tensor grid = integrator(rk4).grid(0).to(torch::kDouble);
  torch::Tensor x = (torch::randn({32, 2}, g, kD) * 0.8 + torch::tensor({1.5, 0.0}, kD)).requires_grad_(true);
  torch::Tensor ll = flowkit::data_log_likelihood(flow, prior, integrator(rk4), grid, x, {}, g).log_likelihood.sum();
  auto grads = torch::autograd::grad({ll}, {mu, x});
  torch::NoGradGuard no_grad;
  const torch::Tensor r = (x - mu) / (0.8 * 0.8);
  EXPECT_LT((grads[0] - r.sum(0)).abs().max().item<double>(), 1e-5);
  EXPECT_LT((grads[1] + r).abs().max().item<double>(), 1e-5);
}

// End to end: eval reports the digits model's NLL (exact and Hutchinson agree on the mean),
// training lowers it, and sampling writes each sample's log-likelihood from its own solve.
TEST(Likelihood, QuickstartReportsBitsPerDimension) {
  TempDir tmp;
  flowkit::core::PluginHost host(build_tree_only());
  std::ifstream in(std::string(FLOWKIT_SOURCE_DIR) + "/plugins/standard/examples/quickstart.json");
  nlohmann::json doc = nlohmann::json::parse(in);
  doc["train"]["steps"] = 400;
  doc["train"]["checkpoint_every"] = 0;
  doc["sample"] = {{"count", 200}, {"log_likelihood", "exact"}};
  doc["eval"] = {{"metrics", {"label_accuracy"}}, {"reference_count", 200}, {"likelihood", "exact"}, {"likelihood_steps", 10}};
  flowkit::core::Pipeline p = resolve_pipeline(doc, host);
  flowkit::core::Session untrained(p, host, run_in(tmp.path(), "untrained"));
  const double before = untrained.evaluate().at("nll_bits_per_dim").get<double>();
  flowkit::core::Session s(p, host, run_in(tmp.path(), "trained"));
  s.train();
  nlohmann::json e = s.evaluate();
  const double after = e.at("nll_bits_per_dim").get<double>();
  std::cout << "[ measured ] digits NLL: untrained " << before << ", trained " << after << " bits/dim; samples "
            << e.at("sample_nll_bits_per_dim") << "\n";
  EXPECT_TRUE(std::isfinite(after));
  EXPECT_LT(after, before - 0.5);
  EXPECT_TRUE(std::isfinite(e.at("sample_nll_bits_per_dim").get<double>()));
  doc["eval"]["likelihood"] = "hutchinson";
  flowkit::core::Pipeline ph = resolve_pipeline(doc, host);
  // Same weights, Hutchinson's divergence: the mean over 200 items agrees with the exact one.
  flowkit::core::Session h(ph, host, run_in(tmp.path(), "hutchinson"));
  h.load_checkpoint((fs::path(tmp.path()) / "trained" / "checkpoints" / "last.pt").string());
  const double hutch = h.evaluate().at("nll_bits_per_dim").get<double>();
  EXPECT_NEAR(hutch, after, 0.05 * std::abs(after) + 0.05);
  // An SDE sampler gives no density: refused, naming the setting.
  doc["solver"] = {{"type", "standard.euler_maruyama"}, {"diffusion", 0.5}};
  flowkit::core::Pipeline sde = resolve_pipeline(doc, host);
  flowkit::core::Session stochastic(sde, host, run_in(tmp.path(), "sde"));
  try {
    stochastic.evaluate();
    FAIL() << "a likelihood through an SDE solver was not refused";
  } catch (const flowkit::ConfigError& e) {
    EXPECT_NE(std::string(e.what()).find("/sample/log_likelihood"), std::string::npos) << e.what();  // sampling comes first
  }
  bool written = false;
  for (const auto& f : s.sample())
    if (fs::path(f).filename() == "log_likelihood.npy") {
      std::vector<int64_t> shape;
      std::vector<float> ll = flowkit::io::read_npy(f, &shape);
      ASSERT_EQ(shape, std::vector<int64_t>{200});
      for (float v : ll) EXPECT_TRUE(std::isfinite(v));
      written = true;
    }
  EXPECT_TRUE(written);
}
