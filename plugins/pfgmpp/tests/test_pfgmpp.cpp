// PFGM++ plugin: kernel statistics, preconditioning, the loss's noise kernel, the exact-denoiser
// end-to-end check, sampler options, a short training run and configuration errors.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cmath>
#include <fstream>

#include "flowkit/capabilities/noise_kernel.h"
#include "flowkit/capability.h"
#include "flowkit/core/pipeline.h"
#include "flowkit/core/plugin_host.h"
#include "flowkit/domain.h"
#include "flowkit/error.h"
#include "flowkit/sample_metrics.h"
#include "pfgmpp/edm_loss.h"
#include "pfgmpp/heun_sampler.h"
#include "pfgmpp/kernel.h"
#include "pfgmpp/models.h"
#include "test_util.h"

using namespace pfgmpp;

namespace {
// A component's config as the host resolves it (overrides plus the manifest's defaults),
// located in "pipeline.json".
flowkit::Config cfg(const std::string& type, const nlohmann::json& overrides = nlohmann::json::object(),
                    const std::string& pointer = "/solver") {
  return flowkit::Config(resolved_config(type, overrides, pointer).json(), "pipeline.json", pointer);
}
// D as a pipeline writes it ("inf" for the Gaussian).
nlohmann::json d_value(double D) { return std::isinf(D) ? nlohmann::json("inf") : nlohmann::json(D); }
KernelPath kernel_path(double D) { return KernelPath(kernel_options(cfg("pfgmpp.kernel", {{"D", d_value(D)}}, "/path"))); }
HeunOptions heun(const nlohmann::json& overrides = nlohmann::json::object()) {
  return heun_options(cfg("pfgmpp.heun", overrides));
}
torch::Tensor sig(double s, int64_t n) { return torch::full({n}, s, torch::kDouble); }
const auto kD = torch::TensorOptions().dtype(torch::kDouble);

// Kolmogorov-Smirnov statistic of samples against a CDF.
double ks_statistic(torch::Tensor x, const std::function<torch::Tensor(const torch::Tensor&)>& cdf) {
  x = std::get<0>(x.to(torch::kDouble).sort());
  const int64_t n = x.size(0);
  torch::Tensor F = cdf(x);
  torch::Tensor hi = torch::arange(1, n + 1, kD) / n, lo = torch::arange(0, n, kD) / n;
  return std::max((hi - F).max().item<double>(), (F - lo).max().item<double>());
}
double ks_two_sample(const torch::Tensor& a, const torch::Tensor& b) {
  torch::Tensor sa = std::get<0>(a.to(torch::kDouble).sort()), sb = std::get<0>(b.to(torch::kDouble).sort());
  torch::Tensor all = torch::cat({sa, sb});
  torch::Tensor fa = torch::searchsorted(sa, all, false, true).to(torch::kDouble) / sa.size(0);
  torch::Tensor fb = torch::searchsorted(sb, all, false, true).to(torch::kDouble) / sb.size(0);
  return (fa - fb).abs().max().item<double>();
}

// Distance of each row of x to its nearest row of y, and the index of that row.
std::pair<torch::Tensor, torch::Tensor> nearest(const torch::Tensor& x, const torch::Tensor& y) {
  auto d = torch::cdist(x.reshape({x.size(0), -1}).to(torch::kDouble), y.reshape({y.size(0), -1}).to(torch::kDouble));
  auto [v, i] = d.min(1);
  return {v, i};
}

// A tiny model for the wrapper tests: F(x, t) = tanh(W x + t).
struct TinyModel : flowkit::Model {
  torch::nn::Linear lin{torch::nn::LinearOptions(3, 3)};
  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& t, const flowkit::Conditioning&) override {
    return torch::tanh(lin(x) + t.reshape({-1, 1}));
  }
  torch::nn::Module& module() override { return *lin; }
};

// ---- closed forms for the statistical tests ------------------------------------------------

// Regularized incomplete beta I_x(a, b) (continued fraction, modified Lentz), with y = 1 - x
// passed separately so that x close to 1 keeps its precision.
double beta_cf(double a, double b, double x) {
  const double tiny = 1e-300, eps = 1e-15;
  double c = 1, d = 1 - (a + b) * x / (a + 1);
  if (std::abs(d) < tiny) d = tiny;
  d = 1 / d;
  double h = d;
  for (int m = 1; m <= 100000; ++m) {
    const double m2 = 2.0 * m;
    double aa = m * (b - m) * x / ((a + m2 - 1) * (a + m2));
    d = 1 + aa * d, c = 1 + aa / c;
    if (std::abs(d) < tiny) d = tiny;
    if (std::abs(c) < tiny) c = tiny;
    d = 1 / d, h *= d * c;
    aa = -(a + m) * (a + b + m) * x / ((a + m2) * (a + m2 + 1));
    d = 1 + aa * d, c = 1 + aa / c;
    if (std::abs(d) < tiny) d = tiny;
    if (std::abs(c) < tiny) c = tiny;
    d = 1 / d;
    const double del = d * c;
    h *= del;
    if (std::abs(del - 1) < eps) return h;
  }
  return h;
}
double beta_inc(double a, double b, double x, double y) {
  if (x <= 0) return 0;
  if (y <= 0) return 1;
  const double front = std::exp(std::lgamma(a + b) - std::lgamma(a) - std::lgamma(b) + a * std::log(x) + b * std::log(y));
  if (x < (a + 1) / (a + b + 2)) return front * beta_cf(a, b, x) / a;
  return 1 - front * beta_cf(b, a, y) / b;
}

// CDF of s = |n|^2 / sigma^2 for the N+D kernel at noise level sigma (r = sigma sqrt(D)):
// s / D ~ BetaPrime(N/2, D/2), i.e. s / (s + D) ~ Beta(N/2, D/2); D = inf: s ~ chi^2_N.
// (The PFGM++ prior is the kernel at sigma_max: s = |x_T|^2 / sigma_max^2.)
torch::Tensor radius2_cdf(const torch::Tensor& s_in, int64_t N, double D) {
  torch::Tensor s = s_in.to(torch::kDouble).contiguous();
  if (std::isinf(D)) return torch::igamma(torch::full_like(s, N / 2.0), s / 2);
  torch::Tensor out = torch::empty_like(s);
  const double* sp = s.data_ptr<double>();
  double* op = out.data_ptr<double>();
  for (int64_t i = 0; i < s.numel(); ++i) op[i] = beta_inc(N / 2.0, D / 2.0, sp[i] / (sp[i] + D), D / (sp[i] + D));
  return out;
}
// Kolmogorov-Smirnov statistic of values that should be U(0, 1).
double ks_uniform(const torch::Tensor& u) {
  return ks_statistic(u, [](const torch::Tensor& v) { return v; });
}
// 0.1% critical value of the one-sample KS statistic.
double ks_critical(int64_t n) { return 1.95 / std::sqrt(static_cast<double>(n)); }
// Standard normal CDF.
torch::Tensor normal_cdf(const torch::Tensor& z) { return 0.5 * torch::erfc(-z / std::sqrt(2.0)); }

// D(x, sigma) = x: the sampler's ODE is then dx/dsigma = 0, so x moves only by injected noise.
struct IdentityDenoiser : flowkit::Model {
  torch::nn::Module dummy;
  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor&, const flowkit::Conditioning&) override { return x; }
  torch::nn::Module& module() override { return dummy; }
};
// D(x, sigma) = 0: dx/dsigma = x / sigma, which every Heun step from s to s' > 0 integrates
// exactly (x -> x s'/s); the Euler step into sigma = 0 gives 0.
struct ZeroDenoiser : flowkit::Model {
  torch::nn::Module dummy;
  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor&, const flowkit::Conditioning&) override {
    return torch::zeros_like(x);
  }
  torch::nn::Module& module() override { return dummy; }
};
}  // namespace

TEST(PfgmppKernel, SecondMomentIsDOverDMinusTwo) {
  for (double D : {8.0, 32.0, 1000.0}) {
    SCOPED_TRACE(D);
    auto gen = at::detail::createCPUGenerator(1);
    const int64_t n = 200000, N = 8;
    const double sigma = 0.7;
    Perturbation p = perturb(D, sig(sigma, n), n, {N}, gen, kD);
    torch::Tensor ratio = p.noise.pow(2).sum(1) / (sigma * sigma * N);
    const double mean = ratio.mean().item<double>(), se = ratio.std().item<double>() / std::sqrt(double(n));
    EXPECT_NEAR(mean, D / (D - 2), 5 * se) << "se " << se;
    EXPECT_TRUE(torch::allclose(p.radius, p.noise.norm(2, 1)));
    EXPECT_EQ(p.clipped_fraction, 0.0);
  }
}

TEST(PfgmppKernel, LargeDMatchesTheGaussian) {
  auto g1 = at::detail::createCPUGenerator(2), g2 = at::detail::createCPUGenerator(3);
  const int64_t n = 20000, N = 16;
  Perturbation big = perturb(1e7, sig(1.3, n), n, {N}, g1, kD);
  Perturbation gauss = perturb(kInf, sig(1.3, n), n, {N}, g2, kD);
  EXPECT_LT(ks_two_sample(big.radius, gauss.radius), 0.02);
  EXPECT_NEAR((big.noise.pow(2).sum(1) / (1.69 * N)).mean().item<double>(), 1.0, 0.01);
  // Coordinates are N(0, sigma^2): compare one coordinate's distribution too.
  EXPECT_LT(ks_two_sample(big.noise.select(1, 0), gauss.noise.select(1, 0)), 0.02);
}

TEST(PfgmppKernel, PriorRadiiFollowBetaPrime) {
  // prior(): sigma = 1, r = sqrt(D); B = R^2 / (R^2 + D) ~ Beta(N/2, D/2) with closed-form CDFs
  // for N = 2 (1 - (1-x)^b) and N = 4 (1 - (1-x)^b (1 + b x)).
  for (int64_t N : {2, 4})
    for (double D : {1.0, 3.0, 10.0, 128.0}) {
      SCOPED_TRACE(std::to_string(N) + " " + std::to_string(D));
      KernelPath path = kernel_path(D);
      auto gen = at::detail::createCPUGenerator(4);
      const int64_t n = 20000;
      torch::Tensor x = path.prior(n, {N}, gen, kD);
      torch::Tensor r2 = x.pow(2).sum(1);
      torch::Tensor b = r2 / (r2 + D);
      const double half = D / 2;
      auto cdf = [&](const torch::Tensor& v) {
        torch::Tensor tail = torch::pow(1 - v, half);
        return N == 2 ? 1 - tail : 1 - tail * (1 + half * v);
      };
      EXPECT_LT(ks_statistic(b, cdf), 1.63 / std::sqrt(double(n)));  // 1% level
      // Directions are uniform: the mean unit vector is ~0.
      torch::Tensor u = x / x.norm(2, 1, true);
      EXPECT_LT(u.mean(0).abs().max().item<double>(), 0.03);
    }
}

TEST(PfgmppKernel, TrainingClipAndItsReportedFraction) {
  auto gen = at::detail::createCPUGenerator(5);
  const int64_t n = 20000;
  // N = 64, D = 1: the upper clip 1 - 1e-3 is active for a sizeable share of draws.
  Perturbation p = perturb(1.0, sig(1.0, n), n, {64}, gen, kD, 1e-3, true);
  EXPECT_GT(p.clipped_fraction, 0.05);
  EXPECT_LT(p.clipped_fraction, 0.4);
  EXPECT_LE(p.radius.max().item<double>(), std::sqrt(0.999 / 0.001) * (1 + 1e-9));
  // N = 64, D = 1e6: B ~ N/D = 6e-5 < 1e-3, so the official lower clip changes every draw
  // (and inflates the radii about 4x); clip_lower = false leaves them alone.
  Perturbation lo = perturb(1e6, sig(1.0, n), n, {64}, gen, kD, 1e-3, true);
  EXPECT_GT(lo.clipped_fraction, 0.99);
  EXPECT_GT(lo.radius.mean().item<double>(), 3 * 8.0);
  Perturbation up = perturb(1e6, sig(1.0, n), n, {64}, gen, kD, 1e-3, false);
  EXPECT_EQ(up.clipped_fraction, 0.0);
  EXPECT_NEAR(up.radius.mean().item<double>(), 8.0, 0.1);
}

TEST(PfgmppPath, SampleMapsTimeToSigma) {
  KernelPath path(kernel_options(cfg("pfgmpp.kernel", {}, "/path")));
  torch::Tensor t = torch::tensor({0.0, 1.0, 0.5}, kD);
  auto s = path.sample(torch::ones({3, 2}, kD), torch::zeros({3, 2}, kD), t);
  torch::Tensor sigma = s.extras.at("sigma");
  EXPECT_NEAR(sigma[0].item<double>(), 80.0, 1e-9);
  EXPECT_NEAR(sigma[1].item<double>(), 0.002, 1e-12);
  EXPECT_NEAR(sigma[2].item<double>(), std::sqrt(80 * 0.002), 1e-9);
  EXPECT_TRUE(torch::allclose(s.xt.select(1, 0), sigma));
}

TEST(PfgmppPrecond, ClosedFormsAndSmallSigmaLimit) {
  const double sd = 0.5;
  torch::Tensor s = torch::tensor({1e-3, 0.1, 0.5, 2.0, 80.0}, kD);
  Precond c = edm_precond(s, sd);
  for (int64_t i = 0; i < s.size(0); ++i) {
    const double v = s[i].item<double>(), q = v * v + sd * sd;
    EXPECT_NEAR(c.c_skip[i].item<double>(), sd * sd / q, 1e-12);
    EXPECT_NEAR(c.c_out[i].item<double>(), v * sd / std::sqrt(q), 1e-12);
    EXPECT_NEAR(c.c_in[i].item<double>(), 1 / std::sqrt(q), 1e-12);
    EXPECT_NEAR(c.c_noise[i].item<double>(), std::log(v) / 4, 1e-12);
  }
  // The denoiser is the identity as sigma -> 0, whatever the inner network.
  EdmModel m(std::make_unique<TinyModel>(), sd);
  torch::Tensor x = torch::randn({4, 3});
  torch::Tensor y = m.forward(x, torch::full({4}, 1e-7), {});
  EXPECT_LT((y - x).abs().max().item<double>(), 1e-5);
  // ... and tends to c_out F at large sigma: D(0, sigma) = c_out F(0, c_noise).
  torch::Tensor y0 = m.forward(torch::zeros({1, 3}), torch::full({1}, 2.0), {});
  torch::Tensor F = torch::tanh(dynamic_cast<TinyModel&>(m.inner()).lin(torch::zeros({1, 3})) + std::log(2.0) / 4);
  EXPECT_TRUE(torch::allclose(y0, F * (2 * sd / std::sqrt(4 + sd * sd)), 1e-5, 1e-6));
  // The inner module is registered under "net" (EMA, checkpoints, quantization see it).
  EXPECT_EQ(m.module().named_parameters().size(), 2u);
  EXPECT_TRUE(m.module().named_parameters().contains("net.weight"));
}

namespace {
// A path without a noise kernel (any t-parametrised interpolant).
struct PlainPath : flowkit::Path {
  flowkit::PathSample sample(const torch::Tensor& x0, const torch::Tensor& x1, const torch::Tensor& t) const override {
    flowkit::PathSample s;
    s.t = t, s.x0 = x0, s.x1 = x1, s.xt = x1, s.dxt = x1 - x0;
    return s;
  }
  torch::Tensor prior(int64_t n, const std::vector<int64_t>& item, torch::Generator& gen,
                      const torch::TensorOptions& options) const override {
    std::vector<int64_t> shape{n};
    shape.insert(shape.end(), item.begin(), item.end());
    return torch::randn(shape, gen, options);
  }
};
// The loss by hand: sigma drawn first, then the perturbation, both from `gen`.
double loss_by_hand(flowkit::Model& model, const torch::Tensor& y, double D, double clip, bool clip_lower,
                    torch::Generator& gen, double* clipped) {
  torch::NoGradGuard no_grad;
  const int64_t n = y.size(0);
  torch::Tensor sigma = torch::exp(-1.2 + 1.2 * torch::randn({n}, gen, kD));
  Perturbation p = perturb(D, sigma, n, {y.size(1)}, gen, y.options(), clip, clip_lower);
  *clipped = p.clipped_fraction;
  torch::Tensor s = sigma.to(torch::kFloat);
  torch::Tensor w = (s * s + 0.25) / (s * 0.5).pow(2);
  return (w * (model.forward(y + p.noise, s, {}) - y).pow(2).sum(1)).mean().item<double>();
}
}  // namespace

TEST(PfgmppLoss, UsesThePathsNoiseKernelOrTheGaussianWithoutAPath) {
  torch::manual_seed(0);
  EdmModel model(std::make_unique<TinyModel>(), 0.5);
  // A wrapper that changes what the output means passes no capabilities on.
  EXPECT_EQ(model.capability_delegate(), nullptr);
  EdmLoss loss(edm_loss_options(cfg("pfgmpp.edm_loss", {}, "/loss")));
  flowkit::Batch b;
  b.set("x", torch::randn({256, 3}) * 0.5);
  // N = 3, D = 1: the upper clip is active for some draws.
  KernelPath path = kernel_path(1);
  ASSERT_NE(flowkit::capability<flowkit::NoiseKernel>(static_cast<const flowkit::Path*>(&path)), nullptr);
  for (bool with_path : {true, false}) {
    SCOPED_TRACE(with_path);
    auto g1 = at::detail::createCPUGenerator(7), g2 = at::detail::createCPUGenerator(7);
    flowkit::LossOutput out = loss.compute(model, with_path ? &path : nullptr, b, g1);
    double clipped = -1;
    const double expected = with_path ? loss_by_hand(model, b.at("x"), 1, 1e-3, true, g2, &clipped)
                                      : loss_by_hand(model, b.at("x"), kInf, 0, true, g2, &clipped);
    EXPECT_NEAR(out.loss.item<double>(), expected, 1e-5 * expected);
    EXPECT_EQ(out.logs.at("clipped_fraction"), clipped);
    if (with_path) EXPECT_GT(clipped, 0.0);
    EXPECT_TRUE(out.logs.count("sigma_mean"));
  }
  // A path that is not a noise kernel is an error, at build time and in compute().
  PlainPath plain;
  try {
    auto g = at::detail::createCPUGenerator(0);
    loss.compute(model, &plain, b, g);
    FAIL() << "a path without a noise kernel was accepted";
  } catch (const flowkit::Error& e) {
    EXPECT_THAT_MSG(e.what(), "pfgmpp.edm_loss needs a path with a noise kernel (flowkit::NoiseKernel");
  }
  flowkit::BuildContext ctx;
  ctx.path = &plain;
  try {
    make_edm_loss(cfg("pfgmpp.edm_loss", {}, "/loss"), ctx);
    FAIL() << "a path without a noise kernel was accepted";
  } catch (const flowkit::ConfigError& e) {
    EXPECT_THAT_MSG(e.what(), "pipeline.json:/loss/type");
    EXPECT_THAT_MSG(e.what(), "flowkit::NoiseKernel");
  }
  ctx.path = &path;
  EXPECT_NO_THROW(make_edm_loss(cfg("pfgmpp.edm_loss", {}, "/loss"), ctx));
  ctx.path = nullptr;
  EXPECT_NO_THROW(make_edm_loss(cfg("pfgmpp.edm_loss", {}, "/loss"), ctx));
}

namespace {
// Records the loss's model input (x = y + n, sigma) and returns y + delta (y given).
struct RecordingDenoiser : flowkit::Model {
  torch::nn::Module dummy;
  torch::Tensor y, delta, seen_x, seen_sigma;
  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& t, const flowkit::Conditioning&) override {
    seen_x = x, seen_sigma = t;
    return y + delta;
  }
  torch::nn::Module& module() override { return dummy; }
};
EdmLoss edm_loss(const nlohmann::json& overrides = nlohmann::json::object()) {
  return EdmLoss(edm_loss_options(cfg("pfgmpp.edm_loss", overrides, "/loss")));
}
KernelPath kernel_path_with(double D, const nlohmann::json& extra) {
  nlohmann::json o = extra;
  o["D"] = d_value(D);
  return KernelPath(kernel_options(cfg("pfgmpp.kernel", o, "/path")));
}
}  // namespace

// The weight and the reduction: with D(x, sigma) = y + delta, loss = mean_i lambda(sigma_i)
// sum_j delta_ij^2, lambda(sigma) = (sigma^2 + sd^2) / (sigma sd)^2 (EDM), at the sigma the model
// was given.
TEST(PfgmppLoss, WeightIsEdmsLambdaSummedOverTheItemAveragedOverTheBatch) {
  const int64_t n = 64, N = 5;
  auto g0 = at::detail::createCPUGenerator(50);
  RecordingDenoiser model;
  model.y = torch::randn({n, N}, g0, kD);
  model.delta = 0.3 * torch::randn({n, N}, g0, kD);
  flowkit::Batch b;
  b.set("x", model.y);
  KernelPath path = kernel_path(8);
  for (double sd : {0.5, 1.7})
    for (double pm : {-1.2, 1.0})
      for (bool with_path : {false, true}) {
        SCOPED_TRACE("sigma_data " + std::to_string(sd) + " P_mean " + std::to_string(pm) + (with_path ? " path" : ""));
        EdmLoss loss = edm_loss({{"sigma_data", sd}, {"P_mean", pm}});
        auto g = at::detail::createCPUGenerator(51);
        flowkit::LossOutput out = loss.compute(model, with_path ? &path : nullptr, b, g);
        torch::Tensor s = model.seen_sigma;
        ASSERT_EQ(s.sizes(), torch::IntArrayRef({n}));
        torch::Tensor lambda = (s * s + sd * sd) / (s * s * sd * sd);
        const double expected = (lambda * model.delta.pow(2).sum(1)).mean().item<double>();
        EXPECT_NEAR(out.loss.item<double>(), expected, 1e-10 * expected);
        EXPECT_NEAR(out.logs.at("sigma_mean"), s.mean().item<double>(), 1e-12);
      }
  // sigma_data's role in lambda: with (nearly) fixed sigma = e^P_mean, the loss ratio of two
  // sigma_data is the ratio of their lambdas.
  auto fixed = [&](double sd) {
    auto g = at::detail::createCPUGenerator(52);
    return edm_loss({{"sigma_data", sd}, {"P_mean", 0.0}, {"P_std", 1e-12}}).compute(model, nullptr, b, g).loss.item<double>();
  };
  const double per = model.delta.pow(2).sum(1).mean().item<double>();
  EXPECT_NEAR(fixed(0.5) / per, (1 + 0.25) / 0.25, 1e-9);
  EXPECT_NEAR(fixed(2.0) / per, (1 + 4.0) / 4.0, 1e-9);
}

// sigma = exp(P_mean + P_std xi): ln(sigma) ~ N(P_mean, P_std) (moments and KS).
TEST(PfgmppLoss, SigmaIsLogNormalWithPMeanAndPStd) {
  const int64_t n = 100000;
  RecordingDenoiser model;
  model.y = torch::zeros({n, 1}, kD);
  model.delta = torch::zeros({n, 1}, kD);
  flowkit::Batch b;
  b.set("x", model.y);
  for (auto params : {std::pair{-1.2, 1.2}, std::pair{0.4, 0.5}}) {
    const double pm = params.first, ps = params.second;  // not a structured binding: lambdas capture these (C++17)
    SCOPED_TRACE(std::to_string(pm) + " " + std::to_string(ps));
    auto g = at::detail::createCPUGenerator(53);
    edm_loss({{"P_mean", pm}, {"P_std", ps}}).compute(model, nullptr, b, g);
    torch::Tensor l = torch::log(model.seen_sigma.to(torch::kDouble));
    EXPECT_NEAR(l.mean().item<double>(), pm, 5 * ps / std::sqrt(double(n)));
    EXPECT_NEAR(l.std().item<double>(), ps, 5 * ps / std::sqrt(2.0 * n));
    EXPECT_LT(ks_statistic(l, [&](const torch::Tensor& v) { return normal_cdf((v - pm) / ps); }), ks_critical(n));
  }
}

// The perturbation x - y is the path's training kernel at the drawn sigma: s = |n|^2 / sigma^2
// with s / D ~ BetaPrime(N/2, D/2) (E s = N D / (D - 2)), the Gaussian's chi^2_N without a
// path or with D = inf; uniform directions; with the training clip, B = s / (s + D) within
// [c, 1 - c] and the logged clipped fraction is the share of draws on the bounds.
TEST(PfgmppLoss, PerturbationIsThePathsKernelAtTheDrawnSigma) {
  const int64_t n = 20000;
  for (int64_t N : {2, 8})
    for (double D : {1.0, 8.0, 64.0, kInf, -1.0}) {  // -1: no path
      const bool no_path = D < 0;
      const double Dk = no_path ? kInf : D;
      SCOPED_TRACE("N=" + std::to_string(N) + (no_path ? " no path" : " D=" + std::to_string(D)));
      KernelPath path = kernel_path_with(Dk, {{"beta_clip", 0.0}});
      RecordingDenoiser model;
      auto g0 = at::detail::createCPUGenerator(54);
      model.y = torch::randn({n, N}, g0, kD);
      model.delta = torch::zeros({n, N}, kD);
      flowkit::Batch b;
      b.set("x", model.y);
      auto g = at::detail::createCPUGenerator(55);
      flowkit::LossOutput out = edm_loss().compute(model, no_path ? nullptr : &path, b, g);
      torch::Tensor noise = model.seen_x - model.y, sigma = model.seen_sigma;
      torch::Tensor s = noise.pow(2).sum(1) / sigma.pow(2);
      EXPECT_LT(ks_uniform(radius2_cdf(s, N, Dk)), ks_critical(n));
      // Another kernel is rejected (the Gaussian for small D): the loss uses this path's kernel.
      const double wrong = Dk <= 8 ? kInf : std::isinf(Dk) ? 8.0 : Dk / 8;
      EXPECT_GT(ks_uniform(radius2_cdf(s, N, wrong)), 2 * ks_critical(n)) << "not told from D = " << wrong;
      if (Dk > 4) {
        const double expected = std::isinf(Dk) ? double(N) : N * Dk / (Dk - 2);
        EXPECT_NEAR(s.mean().item<double>(), expected, 5 * s.std().item<double>() / std::sqrt(double(n)));
      }
      // Scale-free: s does not depend on sigma (the radius scales with the drawn sigma).
      torch::Tensor small = sigma < sigma.median();
      EXPECT_LT(ks_two_sample(s.masked_select(small), s.masked_select(~small)), 1.95 * 2 / std::sqrt(double(n)));
      EXPECT_LT((noise / noise.norm(2, 1, true)).mean(0).abs().max().item<double>(), 5 / std::sqrt(double(n * N)));
      EXPECT_EQ(out.logs.at("clipped_fraction"), 0.0);
    }
  // The official training clip (the path's default 1e-3), not the prior's unclipped draw.
  KernelPath clipped = kernel_path(1);
  const int64_t N = 64;
  RecordingDenoiser model;
  model.y = torch::zeros({n, N}, kD);
  model.delta = torch::zeros({n, N}, kD);
  flowkit::Batch b;
  b.set("x", model.y);
  auto g = at::detail::createCPUGenerator(56);
  flowkit::LossOutput out = edm_loss().compute(model, &clipped, b, g);
  torch::Tensor s = model.seen_x.pow(2).sum(1) / model.seen_sigma.pow(2);
  torch::Tensor B = s / (s + 1.0);
  EXPECT_LE(B.max().item<double>(), 1 - 1e-3 + 1e-9);
  EXPECT_GE(B.min().item<double>(), 1e-3 - 1e-9);
  const double on_bounds = ((B > 1 - 1e-3 - 1e-9) | (B < 1e-3 + 1e-9)).to(torch::kDouble).mean().item<double>();
  EXPECT_GT(on_bounds, 0.05);
  EXPECT_NEAR(out.logs.at("clipped_fraction"), on_bounds, 1e-12);
}

TEST(PfgmppSampler, GridIsEdmsAndNfeIsTwoNMinusOne) {
  torch::Tensor g = edm_sigma_grid(18, 0.002, 80, 7);
  ASSERT_EQ(g.size(0), 19);
  EXPECT_NEAR(g[0].item<double>(), 80.0, 1e-9);
  EXPECT_NEAR(g[17].item<double>(), 0.002, 1e-12);
  EXPECT_EQ(g[18].item<double>(), 0.0);
  EXPECT_TRUE((g.diff() < 0).all().item<bool>());
  const double a = std::pow(80.0, 1 / 7.0), b = std::pow(0.002, 1 / 7.0);
  EXPECT_NEAR(g[5].item<double>(), std::pow(a + 5.0 / 17 * (b - a), 7), 1e-9);
  HeunSampler solver(heun());
  torch::Tensor data = torch::randn({5, 2});
  ExactDenoiser model(data, kInf);
  flowkit::SampleRequest req;
  req.n = 3, req.item_shape = {2}, req.steps = 18, req.options = torch::kFloat;
  auto gen = at::detail::createCPUGenerator(0);
  EXPECT_EQ(solver.sample(model, nullptr, req, gen).nfe, 35);
}

// The training-free check: Heun sampling of the exact denoiser from the D-dependent prior lands
// on training points, for every D (prior, schedule and ODE end to end).
TEST(PfgmppSampler, ExactDenoiserLandsOnTrainingPoints) {
  struct Case {
    int64_t N;
    double D;
  };
  for (Case c : {Case{2, 1}, Case{2, 8}, Case{2, 128}, Case{2, 1e6}, Case{2, kInf}, Case{64, 1}, Case{64, 16},
                 Case{64, 2048}, Case{64, kInf}}) {
    SCOPED_TRACE("N=" + std::to_string(c.N) + " D=" + std::to_string(c.D));
    auto dgen = at::detail::createCPUGenerator(10);
    torch::Tensor data;
    if (c.N == 2) {
      auto ij = torch::arange(16, torch::kLong);
      data = torch::stack({(ij % 4).to(torch::kFloat), (ij / 4).to(torch::kFloat)}, 1) * 1.5 - 2.25;  // 4x4 grid
    } else {
      data = torch::randn({16, c.N}, dgen, torch::kFloat) * 0.75;
    }
    KernelPath path = kernel_path(c.D);
    ExactDenoiser model(data, c.D);
    HeunSampler solver(heun({{"steps", 32}}));
    flowkit::SampleRequest req;
    req.n = 512, req.item_shape = {c.N}, req.options = torch::kFloat, req.keep_intermediates = true;
    auto gen = at::detail::createCPUGenerator(11);
    flowkit::SolveResult res = solver.sample(model, &path, req, gen);
    torch::Tensor x = res.x;
    ASSERT_TRUE(torch::isfinite(x).all().item<bool>());
    // It starts from this D's prior: x_T is sigma_max times a unit-sigma kernel draw of the
    // same D as the denoiser, the generator's first draw (its distribution, for every D:
    // PfgmppSampler.InitialDrawIsThePriorOfTheConfiguredD).
    auto pgen = at::detail::createCPUGenerator(11);
    torch::Tensor prior = kernel_path(c.D).prior(req.n, req.item_shape, pgen, torch::kFloat) * 80.0;
    ASSERT_FALSE(res.intermediates.empty());
    EXPECT_TRUE(torch::allclose(res.intermediates.front(), prior, 1e-6, 1e-4)) << "x_T is not the D = " << c.D << " prior";
    auto [dist, idx] = nearest(x, data);
    // D = 1 keeps the kernel's heavy tail down to sigma_min (a prior draw far out in the tail
    // stays proportionally far out), so a small share of its samples end between points.
    const double landed = (dist < 1e-2).to(torch::kDouble).mean().item<double>();
    if (c.D >= 8) EXPECT_EQ(landed, 1.0) << "max distance " << dist.max().item<double>();
    else EXPECT_GE(landed, 0.98);
    // Every training point is reached (the prior spreads over all of them).
    EXPECT_EQ(std::get<0>(at::_unique(idx)).size(0), 16);
  }
}

// The sampler's initial draw x_T has the PFGM++ prior's radial law for the path's D:
// s = |x_T|^2 / sigma_max^2 with s / D ~ BetaPrime(N/2, D/2) (D = inf, or no path: chi^2_N),
// with sigma_max the sampler's; E s = N D / (D - 2) for D > 2. A prior of another D (the
// Gaussian for small D, D/8 or D/16 for large D, whose laws are close to the Gaussian's) is
// rejected by the same statistic, so a D/prior mismatch cannot pass.
TEST(PfgmppSampler, InitialDrawIsThePriorOfTheConfiguredD) {
  // The incomplete beta against closed forms: I_x(1, b) = 1 - (1-x)^b, I_x(2, b) = 1 - (1-x)^b (1 + b x).
  for (double b : {0.5, 4.0, 64.0})
    for (double x : {1e-4, 0.01, 0.3, 0.9, 0.999999}) {
      EXPECT_NEAR(beta_inc(1, b, x, 1 - x), 1 - std::pow(1 - x, b), 1e-12);
      EXPECT_NEAR(beta_inc(2, b, x, 1 - x), 1 - std::pow(1 - x, b) * (1 + b * x), 1e-12);
    }
  struct Case {
    int64_t N;
    double D;
    std::vector<double> wrong;  // priors of these D must be rejected by the statistic
    double sigma_max = 80;
    bool no_path = false;
  };
  const std::vector<Case> cases = {
      {2, 1, {4, kInf}},   {2, 8, {2, 32, kInf}}, {2, 128, {8}},         {16, 4, {1, 16, kInf}},
      {16, 64, {8, kInf}}, {64, 1, {4, kInf}},    {64, 16, {4, 64, kInf}}, {64, 2048, {128}},
      {2, kInf, {2, 8}},   {64, kInf, {128}},     {8, 8, {2, 32, kInf}, 20.0},
      {8, kInf, {32}, 80.0, true}};
  const int64_t n = 20000;
  for (const Case& c : cases) {
    SCOPED_TRACE("N=" + std::to_string(c.N) + " D=" + std::to_string(c.D) + " sigma_max=" + std::to_string(c.sigma_max) +
                 (c.no_path ? " (no path)" : ""));
    KernelPath path = kernel_path(c.D);  // its own sigma_max stays 80: the sampler's is the prior's scale
    IdentityDenoiser model;
    HeunSampler solver(heun({{"steps", 2}, {"sigma_max", c.sigma_max}}));
    flowkit::SampleRequest req;
    req.n = n, req.item_shape = {c.N}, req.options = kD, req.keep_intermediates = true;
    auto gen = at::detail::createCPUGenerator(21);
    flowkit::SolveResult res = solver.sample(model, c.no_path ? nullptr : &path, req, gen);
    ASSERT_FALSE(res.intermediates.empty());
    torch::Tensor xT = res.intermediates.front();
    ASSERT_EQ(xT.sizes(), torch::IntArrayRef({n, c.N}));
    EXPECT_TRUE(torch::allclose(res.x, xT)) << "D(x) = x must leave x_T unchanged";
    torch::Tensor s = xT.pow(2).sum(1) / (c.sigma_max * c.sigma_max);
    const double ks = ks_uniform(radius2_cdf(s, c.N, c.D));
    EXPECT_LT(ks, ks_critical(n));
    for (double w : c.wrong) {
      const double ks_wrong = ks_uniform(radius2_cdf(s, c.N, w));
      EXPECT_GT(ks_wrong, 2 * ks_critical(n)) << "the statistic does not tell D = " << c.D << " from D = " << w;
    }
    if (c.D > 4) {  // finite variance of s
      const double mean = s.mean().item<double>(), se = s.std().item<double>() / std::sqrt(double(n));
      const double expected = std::isinf(c.D) ? double(c.N) : c.N * c.D / (c.D - 2);
      EXPECT_NEAR(mean, expected, 5 * se) << "E|x_T|^2 / sigma_max^2";
    }
    // Directions uniform on the sphere.
    EXPECT_LT((xT / xT.norm(2, 1, true)).mean(0).abs().max().item<double>(), 5 / std::sqrt(double(n * c.N)));
  }
}

// Noise injection adds alpha sigma_i eps, eps ~ N(0, I) (Gaussian for every D), before step i
// (official generate_alpha.py). With D(x) = x the steps do nothing, so x_{i+1} - x_i =
// alpha sigma_i eps_i; with D(x) = 0 each Heun step scales x by sigma_{i+1}/sigma_i, so
// x_{i+1} - (sigma_{i+1}/sigma_i) x_i = alpha sigma_{i+1} eps_i (noise after the step would
// leave alpha sigma_i eps_i there instead).
TEST(PfgmppSampler, InjectedNoiseIsAlphaSigmaIGaussianBeforeEachStep) {
  KernelPath path = kernel_path(4);  // heavy-tailed prior: the injected noise must still be Gaussian
  const int64_t n = 4000, N = 8, steps = 6;
  flowkit::SampleRequest req;
  req.n = n, req.item_shape = {N}, req.options = kD, req.keep_intermediates = true, req.steps = steps;
  const HeunOptions base = heun();
  torch::Tensor grid = edm_sigma_grid(steps, base.sigma_min, base.sigma_max, base.rho);
  auto run = [&](flowkit::Model& model, double alpha) {
    auto gen = at::detail::createCPUGenerator(31);
    flowkit::SolveResult r = HeunSampler(heun({{"alpha", alpha}})).sample(model, &path, req, gen);
    // Always steps + 1 entries (callers index up to steps); anything else stops the test here.
    if (r.intermediates.size() != size_t(steps + 1)) throw std::runtime_error("expected steps + 1 intermediates");
    return r.intermediates;
  };
  IdentityDenoiser identity;
  ZeroDenoiser zero;
  // alpha = 0: nothing is injected.
  auto clean = run(identity, 0);
  for (int64_t i = 0; i < steps; ++i) EXPECT_TRUE(torch::equal(clean[i + 1], clean[i]));
  const int64_t m = n * N;
  auto ref = run(identity, 0.2);
  for (double alpha : {0.1, 0.35}) {
    SCOPED_TRACE(alpha);
    auto xs = run(identity, alpha);
    auto zs = run(zero, alpha);
    for (int64_t i = 0; i < steps; ++i) {
      SCOPED_TRACE("step " + std::to_string(i));
      const double si = grid[i].item<double>(), sn = grid[i + 1].item<double>();
      torch::Tensor e = ((xs[i + 1] - xs[i]) / (alpha * si)).flatten();  // ~ N(0, 1)
      EXPECT_NEAR(e.std().item<double>(), 1.0, 5 / std::sqrt(2.0 * m));
      EXPECT_NEAR(e.mean().item<double>(), 0.0, 5 / std::sqrt(double(m)));
      EXPECT_LT(ks_statistic(e, normal_cdf), ks_critical(m));
      if (sn > 0) {
        torch::Tensor ez = ((zs[i + 1] - zs[i] * (sn / si)) / (alpha * sn)).flatten();
        EXPECT_NEAR(ez.std().item<double>(), 1.0, 5 / std::sqrt(2.0 * m)) << "noise not injected before the step";
      } else {
        EXPECT_LT(zs[i + 1].abs().max().item<double>(), 1e-12);  // Euler into sigma = 0 with D = 0
      }
    }
    // Same generator: the same eps, so the increments scale exactly with alpha.
    EXPECT_TRUE(torch::equal(xs[0], clean[0]));
    for (int64_t i = 0; i < steps; ++i)
      EXPECT_TRUE(torch::allclose((xs[i + 1] - xs[i]) / alpha, (ref[i + 1] - ref[i]) / 0.2, 1e-9, 1e-9));
  }
}

TEST(PfgmppSampler, NoiseInjectionAndQuantizationOptions) {
  torch::manual_seed(0);
  auto inner = std::make_unique<TinyModel>();
  EdmModel model(std::move(inner), 0.5);
  flowkit::SampleRequest req;
  req.n = 16, req.item_shape = {3}, req.steps = 6, req.options = torch::kFloat;
  KernelPath path = kernel_path(4);
  auto run = [&](double alpha, int64_t bits, uint64_t seed) {
    auto gen = at::detail::createCPUGenerator(seed);
    return HeunSampler(heun({{"alpha", alpha}, {"bits", bits}})).sample(model, &path, req, gen).x;
  };
  torch::Tensor clean = run(0, 0, 1);
  EXPECT_TRUE(torch::equal(run(0.2, 0, 1), run(0.2, 0, 1)));
  EXPECT_FALSE(torch::allclose(run(0.2, 0, 1), clean));
  torch::Tensor before = model.module().named_parameters()["net.weight"].clone();
  torch::Tensor q4 = run(0, 4, 1);
  EXPECT_FALSE(torch::allclose(q4, clean));
  EXPECT_TRUE(torch::equal(before, model.module().named_parameters()["net.weight"])) << "weights not restored";
  EXPECT_TRUE(torch::allclose(run(0, 16, 1), clean, 1e-3, 1e-3));
  // quantize_tensor: at most 2^b levels, error at most half a step.
  torch::Tensor w = torch::randn({64, 64});
  for (int64_t b : {4, 8}) {
    torch::Tensor q = quantize_tensor(w, b);
    EXPECT_LE(std::get<0>(at::_unique(q)).size(0), int64_t(1) << b);
    const double step = (w.max() - w.min()).item<double>() / (std::pow(2.0, double(b)) - 1);
    EXPECT_LE((q - w).abs().max().item<double>(), step * 0.5 + 1e-6);
  }
  // Which parameters quantize_weights touches: weights, not norms, embeddings or affine maps.
  ResMLPOptions ro = resmlp_options(cfg("pfgmpp.resmlp", {{"hidden", 8}, {"blocks", 1}, {"class_conditional", true}}, "/model"));
  ro.in_dim = 4, ro.num_classes = 3;
  ResMLP net(ro);
  auto changed = quantize_weights(*net, 5);
  std::set<std::string> names(changed.begin(), changed.end());
  EXPECT_EQ(names, (std::set<std::string>{"input.weight", "fc1.0.weight", "fc2.0.weight", "output.weight"}));
}

// A short training run on toy2d beats the untrained model by a wide margin.
TEST(PfgmppTraining, ShortToyRunBeatsUntrained) {
  torch::manual_seed(0);
  // The data and the mode statistics come from the standard plugin's domain, built by the host.
  flowkit::core::PluginHost host(build_tree_only());
  std::unique_ptr<flowkit::Component> toy =
      host.create(flowkit::Kind::domain, resolved_config("standard.toy2d", {{"dataset", "8gaussians"}}, "/domain"), {});
  auto& domain = static_cast<flowkit::Domain&>(*toy);  // create() checked the interface
  const std::vector<int64_t> item{2};
  ResMLPOptions ro = resmlp_options(cfg("pfgmpp.resmlp", {{"hidden", 64}, {"blocks", 2}}, "/model"));
  ro.in_dim = 2;
  EdmModel model(std::make_unique<ResMLPModel>(ro, item), 0.5);
  KernelPath path = kernel_path(8);
  EdmLoss loss(edm_loss_options(cfg("pfgmpp.edm_loss", {}, "/loss")));
  HeunSampler solver(heun({{"steps", 12}}));
  auto gen = at::detail::createCPUGenerator(0);
  torch::Tensor ref = domain.train_batch(1000, gen).at("x") / 2;  // std ~1
  double precision = 0;
  auto score = [&]() {
    flowkit::SampleRequest req;
    req.n = 1000, req.item_shape = item, req.options = torch::kFloat;
    auto g = at::detail::createCPUGenerator(1);
    torch::Tensor x = solver.sample(model, &path, req, g).x;
    flowkit::Batch generated, reference;
    generated.set("x", x * 2);
    reference.set("x", ref * 2);
    precision = domain.evaluate(generated, reference, {"mode_precision"}, g).at("mode_precision").get<double>();
    return flowkit::metrics::energy_distance(x, ref);
  };
  const double before = score();
  const double precision_before = precision;
  torch::optim::Adam opt(model.module().parameters(), torch::optim::AdamOptions(2e-3));
  double clipped = 0;
  for (int step = 0; step < 1500; ++step) {
    flowkit::Batch b;
    b.set("x", domain.train_batch(256, gen).at("x") / 2);
    auto out = loss.compute(model, &path, b, gen);
    clipped += out.logs.at("clipped_fraction");
    opt.zero_grad();
    out.loss.backward();
    opt.step();
  }
  const double after = score();
  std::printf("toy2d energy distance: untrained %.4f, trained %.4f; mode precision %.3f -> %.3f; mean clipped "
              "fraction %.4f\n", before, after, precision_before, precision, clipped / 1500);
  EXPECT_LT(after, 0.2 * before);
  EXPECT_LT(after, 0.04);
  EXPECT_GT(precision, 0.7);
  EXPECT_GT(precision - precision_before, 0.25);
}

TEST(PfgmppConfig, BadValuesAreRejectedWithTheirJsonPath) {
  flowkit::core::PluginHost host(build_tree_only());
  nlohmann::json doc = {
      {"domain", {{"type", "standard.toy2d"}}},
      {"path", {{"type", "pfgmpp.kernel"}, {"D", 0}}},
      {"model", {{"type", "pfgmpp.edm"}, {"net", {{"type", "standard.mlp"}, {"hidden", 32}}}}},
      {"loss", {{"type", "pfgmpp.edm_loss"}}},
      {"solver", {{"type", "pfgmpp.heun"}, {"steps", 0}}}};
  auto v = flowkit::core::validate_pipeline(doc, "p.json", host);
  EXPECT_FALSE(v.ok());
  std::string report = v.report();
  EXPECT_THAT_MSG(report, "p.json:/path/D");
  EXPECT_THAT_MSG(report, "p.json:/solver/steps");
  doc["path"]["D"] = "inf";
  doc["solver"]["steps"] = 4;
  EXPECT_TRUE(flowkit::core::validate_pipeline(doc, "p.json", host).ok());
  doc["path"]["D"] = "many";
  EXPECT_THAT_MSG(flowkit::core::validate_pipeline(doc, "p.json", host).report(), "p.json:/path/D");
  doc["path"]["D"] = -3;
  EXPECT_THAT_MSG(flowkit::core::validate_pipeline(doc, "p.json", host).report(), "p.json:/path/D");
  doc["path"]["D"] = 64;
  doc["model"]["net"]["hidden"] = 0;  // nested components are validated too
  EXPECT_THAT_MSG(flowkit::core::validate_pipeline(doc, "p.json", host).report(), "p.json:/model/net/hidden");
  // Cross-parameter checks happen when the component is built, with the same kind of path.
  flowkit::BuildContext ctx;
  try {
    make_heun(cfg("pfgmpp.heun", {{"sigma_min", 80.0}, {"sigma_max", 1.0}}), ctx);
    FAIL() << "sigma_min >= sigma_max accepted";
  } catch (const flowkit::ConfigError& e) {
    EXPECT_THAT_MSG(e.what(), "pipeline.json:/solver/sigma_min");
  }
  EXPECT_THROW(make_kernel(cfg("pfgmpp.kernel", {{"sigma_min", 5.0}, {"sigma_max", 5.0}}, "/path"), ctx), flowkit::ConfigError);
  EXPECT_THROW(make_heun(cfg("pfgmpp.heun", {{"bits", 1}}), ctx), flowkit::ConfigError);
  // Ranges are the manifest's: resolving the config (validation) rejects them.
  EXPECT_THROW(cfg("pfgmpp.kernel", {{"D", 0.5}}, "/path"), flowkit::Error);
  EXPECT_THROW(cfg("pfgmpp.heun", {{"steps", 0}}), flowkit::Error);
  EXPECT_EQ(dynamic_cast<KernelPath&>(*make_kernel(cfg("pfgmpp.kernel", {{"D", "inf"}}, "/path"), ctx)).options().D, kInf);
}

// The committed experiment pipelines validate (they mix standard and pfgmpp components).
TEST(PfgmppConfig, ExamplePipelinesValidate) {
  flowkit::core::PluginHost host(build_tree_only());
  int seen = 0;
  for (const auto& e : std::filesystem::directory_iterator(std::string(PLUGIN_SOURCE_DIR) + "/examples")) {
    if (e.path().extension() != ".json") continue;
    if (e.path().filename().string().find("_sweep.json") != std::string::npos) continue;  // sweeps: their own ctest
    ++seen;
    auto v = flowkit::core::validate_pipeline_file(e.path().string(), host);
    EXPECT_TRUE(v.ok()) << e.path() << ":\n" << v.report();
  }
  EXPECT_GE(seen, 2);
}
