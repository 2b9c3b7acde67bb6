// PFGM++ plugin: kernel statistics, preconditioning, the exact-denoiser end-to-end check,
// sampler options, a short training run and configuration errors.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cmath>
#include <fstream>

#include "flowkit/core/pipeline.h"
#include "flowkit/core/plugin_host.h"
#include "flowkit/error.h"
#include "pfgmpp/pfgmpp.h"
#include "standard/domains.h"
#include "standard/metrics.h"
#include "test_util.h"

using namespace pfgmpp;

namespace {
flowkit::Config cfg(nlohmann::json j = nlohmann::json::object(), const std::string& pointer = "/solver") {
  return flowkit::Config(std::move(j), "pipeline.json", pointer);
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
      KernelOptions o;
      o.D = D;
      KernelPath path(o);
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
  KernelOptions o;
  KernelPath path(o);
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

TEST(PfgmppSampler, GridIsEdmsAndNfeIsTwoNMinusOne) {
  torch::Tensor g = edm_sigma_grid(18, 0.002, 80, 7);
  ASSERT_EQ(g.size(0), 19);
  EXPECT_NEAR(g[0].item<double>(), 80.0, 1e-9);
  EXPECT_NEAR(g[17].item<double>(), 0.002, 1e-12);
  EXPECT_EQ(g[18].item<double>(), 0.0);
  EXPECT_TRUE((g.diff() < 0).all().item<bool>());
  const double a = std::pow(80.0, 1 / 7.0), b = std::pow(0.002, 1 / 7.0);
  EXPECT_NEAR(g[5].item<double>(), std::pow(a + 5.0 / 17 * (b - a), 7), 1e-9);
  HeunSolver solver(HeunOptions{});
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
    KernelOptions ko;
    ko.D = c.D;
    KernelPath path(ko);
    ExactDenoiser model(data, c.D);
    HeunOptions ho;
    ho.steps = 32;
    HeunSolver solver(ho);
    flowkit::SampleRequest req;
    req.n = 512, req.item_shape = {c.N}, req.options = torch::kFloat;
    auto gen = at::detail::createCPUGenerator(11);
    torch::Tensor x = solver.sample(model, &path, req, gen).x;
    ASSERT_TRUE(torch::isfinite(x).all().item<bool>());
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

TEST(PfgmppSampler, NoiseInjectionAndQuantizationOptions) {
  torch::manual_seed(0);
  auto inner = std::make_unique<TinyModel>();
  EdmModel model(std::move(inner), 0.5);
  flowkit::SampleRequest req;
  req.n = 16, req.item_shape = {3}, req.steps = 6, req.options = torch::kFloat;
  KernelOptions ko;
  ko.D = 4;
  KernelPath path(ko);
  auto run = [&](double alpha, int64_t bits, uint64_t seed) {
    HeunOptions o;
    o.alpha = alpha, o.bits = bits;
    auto gen = at::detail::createCPUGenerator(seed);
    return HeunSolver(o).sample(model, &path, req, gen).x;
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
  ResMLPOptions ro;
  ro.in_dim = 4, ro.hidden = 8, ro.blocks = 1, ro.class_conditional = true, ro.num_classes = 3;
  ResMLP net(ro);
  auto changed = quantize_weights(*net, 5);
  std::set<std::string> names(changed.begin(), changed.end());
  EXPECT_EQ(names, (std::set<std::string>{"input.weight", "fc1.0.weight", "fc2.0.weight", "output.weight"}));
}

// A short training run on toy2d beats the untrained model by a wide margin.
TEST(PfgmppTraining, ShortToyRunBeatsUntrained) {
  torch::manual_seed(0);
  const std::vector<int64_t> item{2};
  ResMLPOptions ro;
  ro.in_dim = 2, ro.hidden = 64, ro.blocks = 2;
  EdmModel model(std::make_unique<ResMLPModel>(ro, item), 0.5);
  KernelOptions ko;
  ko.D = 8;
  KernelPath path(ko);
  EdmLoss loss(LossOptions{});
  HeunOptions ho;
  ho.steps = 12;
  HeunSolver solver(ho);
  auto gen = at::detail::createCPUGenerator(0);
  torch::Tensor ref = standard::sample_toy2d("8gaussians", 1000, gen) / 2;  // std ~1
  double precision = 0;
  auto score = [&]() {
    flowkit::SampleRequest req;
    req.n = 1000, req.item_shape = item, req.options = torch::kFloat;
    auto g = at::detail::createCPUGenerator(1);
    torch::Tensor x = solver.sample(model, &path, req, g).x;
    precision = standard::mode_stats_points(x * 2, standard::eight_gaussians_centers(),
                                            standard::kEightGaussiansModeRadius, standard::kModeMinShare).precision;
    return standard::energy_distance(x, ref);
  };
  const double before = score();
  const double precision_before = precision;
  torch::optim::Adam opt(model.module().parameters(), torch::optim::AdamOptions(2e-3));
  double clipped = 0;
  for (int step = 0; step < 1500; ++step) {
    flowkit::Batch b;
    b.set("x", standard::sample_toy2d("8gaussians", 256, gen) / 2);
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
    make_heun(cfg({{"sigma_min", 80.0}, {"sigma_max", 1.0}}), ctx);
    FAIL() << "sigma_min >= sigma_max accepted";
  } catch (const flowkit::ConfigError& e) {
    EXPECT_THAT_MSG(e.what(), "pipeline.json:/solver/sigma_min");
  }
  EXPECT_THROW(make_kernel(cfg({{"sigma_min", 5.0}, {"sigma_max", 5.0}}, "/path"), ctx), flowkit::ConfigError);
  EXPECT_THROW(make_kernel(cfg({{"D", 0.5}}, "/path"), ctx), flowkit::ConfigError);
  EXPECT_THROW(make_heun(cfg({{"steps", 0}}), ctx), flowkit::ConfigError);
  EXPECT_EQ(dynamic_cast<KernelPath&>(*make_kernel(cfg({{"D", "inf"}}, "/path"), ctx)).options().D, kInf);
}

// The committed experiment pipelines validate (they mix standard and pfgmpp components).
TEST(PfgmppConfig, ExamplePipelinesValidate) {
  flowkit::core::PluginHost host(build_tree_only());
  int seen = 0;
  for (const auto& e : std::filesystem::directory_iterator(std::string(PLUGIN_SOURCE_DIR) + "/examples")) {
    if (e.path().extension() != ".json") continue;
    ++seen;
    auto v = flowkit::core::validate_pipeline_file(e.path().string(), host);
    EXPECT_TRUE(v.ok()) << e.path() << ":\n" << v.report();
  }
  EXPECT_GE(seen, 2);
}
