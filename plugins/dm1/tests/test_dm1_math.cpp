// DM1 plugin: JVP correctness, the MeanFlow identity on an analytic flow, the dispersive
// losses, the environment and the scripted expert.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cmath>

#include "dm1/dm1.h"
#include "flowkit/capability.h"
#include "flowkit/core/diagnostics.h"
#include "flowkit/error.h"
#include "flowkit/path.h"
#include "test_util.h"

using namespace dm1;

namespace {

DomainOptions small_domain(const std::string& variant, int64_t demos = 20) {
  return domain_options(resolved_config("dm1.bireach", {{"observation", variant}, {"demos", demos}, {"heldout_demos", 5}}));
}

// The task's default environment and expert (dm1.bireach's defaults).
DomainOptions default_domain() { return domain_options(resolved_config("dm1.bireach")); }

std::unique_ptr<PolicyModel> small_policy(const BiReachDomain& d, int64_t hidden = 32) {
  PolicyOptions o = policy_options(resolved_config(
      "dm1.policy", {{"hidden", hidden}, {"layers", 2}, {"obs_hidden", 32}, {"obs_embed", 16}, {"time_embed", 8}}));
  o.action_dim = 16;
  auto shapes = d.condition_shapes();
  o.obs_shape = shapes.at("obs");
  o.proprio_dim = shapes.count("proprio") ? shapes.at("proprio")[0] : 0;
  return std::make_unique<PolicyModel>(o, "cpu");
}

MeanFlowOptions meanflow(const nlohmann::json& overrides) { return meanflow_options(resolved_config("dm1.meanflow", overrides)); }

// The exact MeanFlow average velocity of 1-D Gaussian data N(m, s^2) under the official path
// z_t = (1 - t) x + t eps: mu_t = (1 - t) m, sigma_t = sqrt((1 - t)^2 s^2 + t^2), and the
// flow map z_r = mu_r + sigma_r (z_t - mu_t) / sigma_t, so u = (z_t - z_r) / (t - r).
struct AnalyticU : flowkit::Model {
  double m, s;
  torch::nn::Module dummy;
  AnalyticU(double m_, double s_) : m(m_), s(s_) {}
  torch::Tensor sigma(const torch::Tensor& t) const { return torch::sqrt((1 - t).pow(2) * s * s + t.pow(2)); }
  torch::Tensor velocity(const torch::Tensor& z, const torch::Tensor& t) const {
    torch::Tensor st = sigma(t), ds = (-(1 - t) * s * s + t) / st;
    return -m + ds / st * (z - (1 - t) * m);
  }
  torch::Tensor forward(const torch::Tensor& z, const torch::Tensor& t_in, const flowkit::Conditioning& cond) override {
    torch::Tensor t = t_in.reshape({-1, 1}), r = cond.at("r").reshape({-1, 1});
    torch::Tensor zr = (1 - r) * m + sigma(r) * (z - (1 - t) * m) / sigma(t);
    torch::Tensor h = t - r;
    torch::Tensor safe = torch::where(h.abs() < 1e-9, torch::ones_like(h), h);
    return torch::where(h.abs() < 1e-9, velocity(z, t), (z - zr) / safe);
  }
  torch::nn::Module& module() override { return dummy; }
};

// The analytic flow of AnalyticU plus an offset delta = c0 + a t + b r + k z whose
// coefficients are parameters (so the loss's gradient can be checked), recording the inputs of
// its last call (compute()'s plain forward pass after the JVP).
struct OffsetAnalyticU : flowkit::Model {
  AnalyticU exact;
  torch::nn::Module params;
  torch::Tensor c0, a, b, k;
  torch::Tensor seen_z, seen_t, seen_r;
  int calls = 0;
  OffsetAnalyticU(double m, double s, double c0_, double a_, double b_, double k_) : exact(m, s) {
    auto o = torch::TensorOptions().dtype(torch::kDouble);
    c0 = params.register_parameter("c0", torch::full({}, c0_, o));
    a = params.register_parameter("a", torch::full({}, a_, o));
    b = params.register_parameter("b", torch::full({}, b_, o));
    k = params.register_parameter("k", torch::full({}, k_, o));
  }
  torch::Tensor forward(const torch::Tensor& z, const torch::Tensor& t, const flowkit::Conditioning& cond) override {
    ++calls;
    seen_z = z, seen_t = t, seen_r = cond.at("r");
    torch::Tensor tb = t.reshape({-1, 1}), rb = cond.at("r").reshape({-1, 1});
    return exact.forward(z, t, cond) + c0 + a * tb + b * rb + k * z;
  }
  torch::nn::Module& module() override { return params; }
};

// A path whose prior is a fixed tensor (the loss's eps, known to the test).
struct FixedPrior : flowkit::Path {
  torch::Tensor eps;
  explicit FixedPrior(torch::Tensor e) : eps(std::move(e)) {}
  flowkit::PathSample sample(const torch::Tensor&, const torch::Tensor&, const torch::Tensor&) const override {
    throw flowkit::Error("FixedPrior: sample() is not used by dm1.meanflow");
  }
  torch::Tensor prior(int64_t n, const std::vector<int64_t>& item, torch::Generator&,
                      const torch::TensorOptions& options) const override {
    std::vector<int64_t> shape{n};
    shape.insert(shape.end(), item.begin(), item.end());
    EXPECT_EQ(eps.sizes(), torch::IntArrayRef(shape));
    return eps.to(options);
  }
};

// Standard normal CDF, and the KS statistic of values that should be U(0, 1).
torch::Tensor normal_cdf(const torch::Tensor& z) { return 0.5 * torch::erfc(-z / std::sqrt(2.0)); }
double ks_uniform(const torch::Tensor& u_in) {
  torch::Tensor u = std::get<0>(u_in.to(torch::kDouble).flatten().sort());
  const int64_t n = u.size(0);
  auto o = torch::TensorOptions().dtype(torch::kDouble);
  torch::Tensor hi = torch::arange(1, n + 1, o) / n, lo = torch::arange(0, n, o) / n;
  return std::max((hi - u).max().item<double>(), (u - lo).max().item<double>());
}
double ks_critical(int64_t n) { return 1.95 / std::sqrt(static_cast<double>(n)); }  // 0.1% level

}  // namespace

TEST(Dm1Jvp, ForwardAdMatchesDoubleBackward) {
  for (const char* variant : {"state", "image"}) {
    SCOPED_TRACE(variant);
    BiReachDomain d(small_domain(variant));
    auto model = small_policy(d);
    model->module().to(torch::kDouble);
    auto g = at::detail::createCPUGenerator(3);
    flowkit::Batch b = d.train_batch(16, g);
    flowkit::Conditioning cond;
    for (const auto& n : b.names())
      if (n != "x") cond.set(n, b.at(n).to(torch::kDouble));
    torch::Tensor x = b.at("x").to(torch::kDouble);
    torch::Tensor z = torch::randn(x.sizes(), g, torch::kDouble), v = torch::randn(x.sizes(), g, torch::kDouble);
    torch::Tensor t = torch::rand({16}, g, torch::kDouble), r = t * torch::rand({16}, g, torch::kDouble);
    Jvp a = meanflow_jvp(*model, z, t, r, v, cond, "forward_ad");
    Jvp ref = meanflow_jvp(*model, z, t, r, v, cond, "double_backward");
    double rel = ((a.dudt - ref.dudt).norm() / ref.dudt.norm()).item<double>();
    EXPECT_LT(rel, 1e-10);
    EXPECT_LT((a.u - ref.u).abs().max().item<double>(), 1e-12);
    EXPECT_GT(ref.dudt.norm().item<double>(), 1e-3);  // non-trivial
    // And the JVP is the directional derivative: central difference along (v, 1, 0).
    const double e = 1e-5;
    flowkit::Conditioning cr = cond;
    cr.set("r", r);
    torch::NoGradGuard ng;
    torch::Tensor fd = (model->forward(z + e * v, t + e, cr) - model->forward(z - e * v, t - e, cr)) / (2 * e);
    EXPECT_LT(((fd - a.dudt).norm() / a.dudt.norm()).item<double>(), 1e-6);
  }
}

TEST(Dm1MeanFlow, IdentityHoldsForAnalyticGaussianFlow) {
  AnalyticU model(0.7, 0.3);
  auto opts = torch::TensorOptions().dtype(torch::kDouble);
  auto g = at::detail::createCPUGenerator(1);
  torch::Tensor z = torch::randn({64, 1}, g, opts) * 1.5;
  torch::Tensor t = 0.05 + 0.9 * torch::rand({64}, g, opts), r = t * torch::rand({64}, g, opts);
  flowkit::Conditioning cond;
  cond.set("r", r);
  torch::Tensor v = model.velocity(z, t.reshape({-1, 1}));
  // The loss target with the marginal velocity as tangent: u_tgt = v - (t - r) du/dt = u.
  Jvp j = meanflow_jvp(model, z, t, r, v, cond, "forward_ad");
  torch::Tensor tgt = v - (t - r).reshape({-1, 1}) * j.dudt;
  EXPECT_LT((tgt - j.u).abs().max().item<double>(), 1e-9);
  // The correction term matters: u differs from the instantaneous velocity.
  EXPECT_GT((v - j.u).abs().max().item<double>(), 1e-3);
  // One MeanFlow step maps N(0, 1) to N(m, s^2).
  MeanFlowSampler solver(1, 0.0);
  flowkit::SampleRequest req;
  req.n = 20000;
  req.item_shape = {1};
  req.options = opts;
  flowkit::SolveResult out = solver.sample(model, nullptr, req, g);
  EXPECT_NEAR(out.x.mean().item<double>(), 0.7, 0.01);
  EXPECT_NEAR(out.x.std().item<double>(), 0.3, 0.01);
  EXPECT_EQ(out.nfe, 1);
}

TEST(Dm1MeanFlow, TimeSamplerRatioAndOrder) {
  MeanFlowLoss loss(meanflow({{"ratio_r_neq_t", 0.25}}));
  auto g = at::detail::createCPUGenerator(4);
  auto [t, r] = loss.sample_tr(1000, g, torch::kFloat);
  EXPECT_TRUE((t >= r).all().item<bool>());
  EXPECT_EQ((t == r).sum().item<int64_t>(), 750);
  EXPECT_TRUE(((t > 0) & (t < 1)).all().item<bool>());
  // logit-normal(-0.4, 1): median of max(a, b) above sigmoid(-0.4) = 0.401.
  EXPECT_GT(t.median().item<double>(), 0.40);
}

// MeanFlowLoss::compute itself against the analytic flow of 1-D Gaussian data N(m, s^2) per
// coordinate (AnalyticU). With z = (1 - t) x + t eps, v = eps - x and u the exact average
// velocity of the marginal field V, the target v - (t - r) du/dt differs from u by
// (V(z, t) - v)(1 - (t - r) d_z u) = (V(z, t) - v) sigma_r / sigma_t for ANY pair (x, eps): the
// per-element error of the exact model is e = (sigma_r / sigma_t)(V - v), which is 0 for point
// data (s = 0, x = m). An offset delta = c0 + a t + b r + k z adds delta + (t - r)(a + k v)
// (its du/dt along the tangents (v, 1, 0) is k v + a). mse: mean of e^2 over every element;
// adaptive: mean_i l_i / (l_i + c)^p with l_i = sum_dims e^2 and the weight stop-gradiented.
TEST(Dm1MeanFlow, LossOfTheAnalyticFlowIsItsClosedForm) {
  const auto o = torch::TensorOptions().dtype(torch::kDouble);
  const int64_t B = 512, d = 3;
  const double m = 0.7;
  auto dg = at::detail::createCPUGenerator(40);
  torch::Tensor eps = torch::randn({B, d}, dg, o);
  FixedPrior path(eps);
  struct Case {
    double s, c0, a, b, k;
    double ratio;
    std::string weighting = "mse";
    double p = 1, c = 0.01;
  };
  const std::vector<Case> cases = {
      {0.0, 0, 0, 0, 0, 0.5},           // point data, exact u: zero loss for r = t and r != t rows
      {0.0, 0, 0, 0, 0, 1.0},
      {0.0, 0, 0, 0, 0, 0.0},
      {0.3, 0, 0, 0, 0, 0.5},           // Gaussian data: the closed-form irreducible error
      {0.3, 0, 0, 0, 0, 1.0},
      {0.0, 0.05, 0.3, -0.2, 0.15, 0.5},  // off by a known offset
      {0.3, 0.05, 0.3, -0.2, 0.15, 0.25},
      {0.3, 0.05, 0.3, -0.2, 0.15, 0.5, "adaptive", 1.0, 0.01},
      {0.3, 0.05, 0.3, -0.2, 0.15, 0.5, "adaptive", 0.5, 0.2}};
  for (const char* jvp : {"forward_ad", "double_backward"})
    for (const Case& c : cases) {
      SCOPED_TRACE(std::string(jvp) + " s=" + std::to_string(c.s) + " offset=" + std::to_string(c.a) + " ratio=" +
                   std::to_string(c.ratio) + " " + c.weighting + " p=" + std::to_string(c.p));
      MeanFlowLoss loss(meanflow({{"ratio_r_neq_t", c.ratio}, {"weighting", c.weighting}, {"adaptive_p", c.p},
                                  {"adaptive_c", c.c}, {"jvp", jvp}}));
      OffsetAnalyticU model(m, c.s, c.c0, c.a, c.b, c.k);
      auto xg = at::detail::createCPUGenerator(41);
      torch::Tensor x = c.s == 0 ? torch::full({B, d}, m, o) : m + 0.5 * torch::randn({B, d}, xg, o);
      flowkit::Batch batch;
      batch.set("x", x);
      auto g = at::detail::createCPUGenerator(42);
      flowkit::LossOutput out = loss.compute(model, &path, batch, g);
      EXPECT_EQ(model.calls, 2);  // the JVP pass and the plain pass
      torch::Tensor t = model.seen_t.detach().reshape({-1, 1}), r = model.seen_r.detach().reshape({-1, 1});
      ASSERT_EQ(t.size(0), B);
      // The loss's own (t, r): r <= t, the configured share of rows with r != t.
      EXPECT_TRUE((r <= t).all().item<bool>());
      const int64_t neq = (t != r).sum().item<int64_t>();
      EXPECT_NEAR(double(neq) / B, c.ratio, 4 * std::sqrt(c.ratio * (1 - c.ratio) / B) + 1.0 / B);
      // z = (1 - t) x + t eps (t = 1 noise).
      torch::Tensor z = model.seen_z.detach();
      EXPECT_LT((z - ((1 - t) * x + t * eps)).abs().max().item<double>(), 1e-12);
      // Closed-form per-element error.
      torch::Tensor v = eps - x, h = t - r;
      torch::Tensor ratio_sigma = model.exact.sigma(r) / model.exact.sigma(t);
      torch::Tensor e = ratio_sigma * (model.exact.velocity(z, t) - v) + c.c0 + c.a * t + c.b * r + c.k * z +
                        h * (c.a + c.k * v);
      torch::Tensor per = e.pow(2).sum(1);
      double expected;
      torch::Tensor w;  // d loss / d e (the weight as a constant)
      if (c.weighting == "adaptive") {
        torch::Tensor wi = 1.0 / (per + c.c).pow(c.p);
        expected = (wi * per).mean().item<double>();
        w = 2 * wi.unsqueeze(1) * e / B;
      } else {
        expected = e.pow(2).mean().item<double>();
        w = 2 * e / (B * d);
      }
      const double tol = 1e-9 * std::max(1.0, expected);
      if (c.s == 0 && c.a == 0 && c.k == 0 && c.c0 == 0) {
        EXPECT_LT(out.loss.item<double>(), 1e-20) << "the exact average velocity must have zero loss";
        EXPECT_LT(out.logs.at("u_loss"), 1e-20);
      }
      EXPECT_NEAR(out.loss.item<double>(), expected, tol);
      EXPECT_NEAR(out.logs.at("u_loss"), per.mean().item<double>(), 1e-9 * std::max(1.0, per.mean().item<double>()));
      torch::Tensor eq = (t == r).squeeze(1);
      if (c.ratio < 1) {
        ASSERT_TRUE(out.logs.count("v_loss"));
        EXPECT_NEAR(out.logs.at("v_loss"), per.masked_select(eq).mean().item<double>(), 1e-9);
      } else {
        EXPECT_FALSE(out.logs.count("v_loss"));
      }
      // The correction matters here: the target v alone (no (t - r) du/dt) would give another loss.
      if ((c.s > 0 || c.a != 0 || c.k != 0) && c.ratio > 0) {
        torch::NoGradGuard ng;
        flowkit::Conditioning cr;
        cr.set("r", r.squeeze(1));
        torch::Tensor e_fm = model.forward(z, t.squeeze(1), cr) - v;
        EXPECT_GT(std::abs(e_fm.pow(2).mean().item<double>() - e.pow(2).mean().item<double>()),
                  1e-3 * e.pow(2).mean().item<double>());
      }
      // Gradients reach the model's output only (the target is stop-gradiented): dL/dtheta =
      // sum w * d delta / d theta, with d delta/d(c0, a, b, k) = (1, t, r, z).
      out.loss.backward();
      EXPECT_NEAR(model.c0.grad().item<double>(), w.sum().item<double>(), 1e-9);
      EXPECT_NEAR(model.a.grad().item<double>(), (w * t).sum().item<double>(), 1e-9);
      EXPECT_NEAR(model.b.grad().item<double>(), (w * r).sum().item<double>(), 1e-9);
      EXPECT_NEAR(model.k.grad().item<double>(), (w * z).sum().item<double>(), 1e-9);
    }
}

// (t, r) = (max, min) of two logit-normal(p_mean, p_std) draws, then r = t on a random
// 1 - ratio share of the rows. The laws, with Phi_x = Phi((logit x - p_mean) / p_std):
// Phi_t^2 ~ U(0, 1) (every row), 1 - (1 - Phi_r)^2 ~ U(0, 1) and Phi_r / Phi_t ~ U(0, 1)
// (the two draws independent) on the r != t rows, whose pooled {t, r} are logit-normal.
TEST(Dm1MeanFlow, TimeSamplerIsLogitNormalOrderStatistics) {
  struct Case {
    double p_mean, p_std, ratio;
  };
  const int64_t n = 20000;
  for (Case c : {Case{-0.4, 1.0, 0.25}, Case{0.5, 0.6, 0.5}, Case{-0.4, 1.0, 0.0}, Case{-1.0, 1.6, 1.0}}) {
    SCOPED_TRACE(std::to_string(c.p_mean) + " " + std::to_string(c.p_std) + " " + std::to_string(c.ratio));
    MeanFlowLoss loss(meanflow({{"ratio_r_neq_t", c.ratio}, {"p_mean", c.p_mean}, {"p_std", c.p_std}}));
    auto g = at::detail::createCPUGenerator(43);
    auto [t, r] = loss.sample_tr(n, g, torch::kDouble);
    ASSERT_EQ(t.sizes(), torch::IntArrayRef({n}));
    EXPECT_TRUE((r <= t).all().item<bool>());
    EXPECT_TRUE(((r > 0) & (t < 1)).all().item<bool>());
    torch::Tensor neq = t != r;
    const int64_t k = neq.sum().item<int64_t>();
    EXPECT_NEAR(double(k) / n, c.ratio, 4 * std::sqrt(c.ratio * (1 - c.ratio) / n) + 1.0 / n);
    auto phi = [&](const torch::Tensor& x) { return normal_cdf((torch::log(x / (1 - x)) - c.p_mean) / c.p_std); };
    torch::Tensor pt = phi(t), pr = phi(r);
    EXPECT_LT(ks_uniform(pt.pow(2)), ks_critical(n)) << "t is not the max of two logit-normal draws";
    // Which rows get r = t does not depend on t.
    if (k < n) EXPECT_LT(ks_uniform(pt.masked_select(~neq).pow(2)), ks_critical(n - k));
    if (k > 0) {
      torch::Tensor ptn = pt.masked_select(neq), prn = pr.masked_select(neq);
      EXPECT_LT(ks_uniform(1 - (1 - prn).pow(2)), ks_critical(k)) << "r is not the min of two logit-normal draws";
      EXPECT_LT(ks_uniform(prn / ptn), ks_critical(k)) << "the two draws are not independent";
      EXPECT_LT(ks_uniform(torch::cat({ptn, prn})), ks_critical(2 * k));  // as a set, the pairs are the iid draws
      // logit moments of the pooled draws: mean p_mean, std p_std.
      torch::Tensor l = torch::log(torch::cat({t.masked_select(neq), r.masked_select(neq)}) /
                                   (1 - torch::cat({t.masked_select(neq), r.masked_select(neq)})));
      EXPECT_NEAR(l.mean().item<double>(), c.p_mean, 5 * c.p_std / std::sqrt(2.0 * k));
      EXPECT_NEAR(l.std().item<double>(), c.p_std, 5 * c.p_std / std::sqrt(4.0 * k));
    }
  }
}

TEST(Dm1Dispersive, KnownMinimumAndMaximum) {
  const int64_t B = 16;
  torch::Tensor same = torch::ones({B, 8}, torch::kDouble);
  torch::Tensor far = 1000.0 * torch::eye(B, torch::kDouble);
  EXPECT_NEAR(dispersive_wang_he(same, 0.5).item<double>(), 0.0, 1e-12);
  EXPECT_NEAR(dispersive_wang_he(far, 0.5).item<double>(), -std::log(16.0), 1e-9);
  EXPECT_NEAR(dispersive_dm1(same, 0.5).item<double>(), -std::log(std::exp(10.0) + B - 1), 1e-6);  // d clamped at 1e-6
  EXPECT_NEAR(dispersive_dm1(far, 0.5).item<double>(), -(10.0 + std::log(16.0)), 1e-9);
  // In between, and gradients that push rows apart (finite, non-zero).
  auto g = at::detail::createCPUGenerator(5);
  torch::Tensor z = (0.1 * torch::randn({B, 8}, g, torch::kDouble)).requires_grad_(true);
  torch::Tensor l = dispersive_wang_he(z, 0.5);
  EXPECT_LT(l.item<double>(), 0.0);
  EXPECT_GT(l.item<double>(), -std::log(16.0));
  l.backward();
  torch::Tensor z2 = (z - 0.1 * z.grad()).detach();  // a descent step spreads the rows
  auto spread = [](const torch::Tensor& a) { return torch::cdist(a, a).mean().item<double>(); };
  EXPECT_GT(spread(z2), spread(z.detach()));
}

TEST(Dm1Dispersive, GradientReachesTheEncoder) {
  BiReachDomain d(small_domain("state"));
  auto model = small_policy(d);
  auto grads = [&](double lambda, const std::string& form, const std::string& pass) {
    MeanFlowLoss loss(meanflow(
        {{"dispersive_weight", lambda}, {"dispersive_form", form}, {"dispersive_pass", pass}, {"dispersive_taps", "obs"}}));
    auto g = at::detail::createCPUGenerator(7);
    model->module().zero_grad();
    auto out = loss.compute(*model, nullptr, d.train_batch(64, g), g);
    out.loss.backward();
    std::vector<torch::Tensor> gs;
    for (const auto& p : model->net()->named_parameters())
      if (p.key().rfind("state_enc", 0) == 0) gs.push_back(p.value().grad().clone());
    return gs;
  };
  auto base = grads(0.0, "wang_he", "same");
  for (auto [form, pass] : {std::pair{"wang_he", "same"}, {"dm1", "clean"}}) {
    SCOPED_TRACE(form);
    auto with = grads(0.5, form, pass);
    double diff = 0;
    for (size_t i = 0; i < base.size(); ++i) diff += (with[i] - base[i]).abs().sum().item<double>();
    EXPECT_GT(diff, 1e-6) << "the dispersive term does not change the encoder's gradients";
  }
}

TEST(Dm1Env, DynamicsCollisionSuccessTimeout) {
  EnvOptions o = default_domain().env;
  BiReachEnv env(o);
  Vec2 g0 = env.goal_position(0);
  // 0: straight up into the obstacle; 1: next to goal 0; 2: clipped action; 3: idle.
  env.reset_to({{0, -0.81}, {g0.x - 0.1, g0.y}, {0.9, -0.9}, {-0.9, -0.9}}, {0, 0, 3, 3});
  env.step({{0, 1}, {1, 0}, {3, -0.5}, {0, 0}});
  EXPECT_NEAR(env.positions()[2].x, 0.95, 1e-12);
  EXPECT_NEAR(env.positions()[2].y, -0.925, 1e-12);
  EXPECT_NEAR(env.previous_actions()[2].x, 1.0, 1e-12);
  EXPECT_EQ(env.status()[1], Status::success);
  for (int k = 1; k < 10; ++k) env.step({{0, 1}, {1, 0}, {1, 0}, {0, 0}});
  EXPECT_EQ(env.status()[0], Status::running);  // y = -0.31 after 10 steps
  EXPECT_NEAR(env.positions()[1].x, g0.x - 0.05, 1e-12);  // finished episodes do not move
  EXPECT_NEAR(env.positions()[2].x, 1.0, 1e-12);  // clipped to the workspace
  env.step({{0, 1}, {0, 0}, {0, 0}, {0, 0}});
  EXPECT_EQ(env.status()[0], Status::collision);
  while (!env.all_done()) env.step(std::vector<Vec2>(4, Vec2{0, 0}));
  EXPECT_EQ(env.status()[3], Status::timeout);
  EXPECT_EQ(env.steps_taken(), o.horizon);
  // Side bookkeeping: a detour on the right.
  BiReachEnv e2(o);
  e2.reset_to({{0, -0.8}}, {0});
  for (int k = 0; k < 12; ++k) e2.step({{1, 0.2}});
  for (int k = 0; k < 20 && e2.side()[0] == 0; ++k) e2.step({{0, 1}});
  EXPECT_EQ(e2.side()[0], 1);
  // Wilson interval sanity.
  auto [lo, hi] = wilson(50, 100);
  EXPECT_NEAR(lo, 0.4038, 1e-3);
  EXPECT_NEAR(hi, 0.5962, 1e-3);
}

TEST(Dm1Env, ScriptedExpertSucceedsWithBothModes) {
  DomainOptions defaults = default_domain();
  BiReachEnv env(defaults.env);
  Expert expert(env, defaults.expert);
  auto g = at::detail::createCPUGenerator(11);
  env.reset(500, g);
  expert.reset(500, g);
  while (!env.all_done()) env.step(expert.act(g));
  int succ = 0, left = 0, succ_left = 0, succ_right = 0;
  for (int i = 0; i < 500; ++i) {
    bool s = env.status()[i] == Status::success;
    succ += s;
    left += env.side()[i] < 0;
    EXPECT_EQ(env.side()[i], expert.sides()[i]) << "the expert switched sides";
    (env.side()[i] < 0 ? succ_left : succ_right) += s;
  }
  EXPECT_GE(succ, 475);
  EXPECT_GT(left, 200);
  EXPECT_LT(left, 300);
  EXPECT_GT(succ_left, 200);
  EXPECT_GT(succ_right, 200);
  // Domain data: chunks in the action range, observations of both variants.
  BiReachDomain ds(small_domain("state", 10)), di(small_domain("image", 10));
  auto gb = at::detail::createCPUGenerator(2);
  auto b = di.train_batch(8, gb);
  EXPECT_TRUE(b.at("x").sizes().equals({8, 8, 2}));
  EXPECT_TRUE(b.at("obs").sizes().equals({8, 1, 16, 16}));
  EXPECT_TRUE(b.at("proprio").sizes().equals({8, 4}));
  EXPECT_LE(ds.train_batch(64, gb).at("x").abs().max().item<double>(), 1.0);
  EXPECT_GE(ds.train_data().successes, 9);
}

// The representations come from the same pass as the output, with the graph, and plain
// forward() records nothing (moved here from the host's diagnostics test).
TEST(Dm1Policy, ExposesItsRepresentations) {
  BiReachDomain domain(small_domain("state", 10));
  auto g = at::detail::createCPUGenerator(2);
  flowkit::Batch ref = domain.reference(64, g);
  ASSERT_TRUE(ref.has("goal"));  // the label eval.probe_label reads
  auto model = small_policy(domain);
  flowkit::Conditioning cond;
  for (const auto& name : ref.names())
    if (name != "x") cond.set(name, ref.at(name));
  flowkit::Model& generic = *model;
  auto* rep = flowkit::capability<flowkit::RepresentationModel>(generic);
  ASSERT_NE(rep, nullptr);
  auto [out, reps] = rep->forward_with_representations(ref.at("x"), torch::ones({64}), cond);
  ASSERT_TRUE(reps.has("obs"));
  EXPECT_EQ(reps.at("obs").sizes(), torch::IntArrayRef({64, 16}));
  EXPECT_TRUE(reps.has("t") && reps.has("r") && reps.has("trunk0") && reps.has("trunk1"));
  EXPECT_FALSE(reps.has("trunk2"));
  EXPECT_TRUE(reps.at("obs").requires_grad());
  EXPECT_GT(flowkit::core::effective_rank(reps.at("obs").detach()), 1.0);
  EXPECT_TRUE(torch::equal(out, generic.forward(ref.at("x"), torch::ones({64}), cond)));
}

// Shapes of the conditions the policy reads, known without drawing data.
TEST(Dm1Domain, ConditionShapesMatchTheObservations) {
  for (const char* variant : {"state", "image"}) {
    SCOPED_TRACE(variant);
    BiReachDomain d(small_domain(variant, 5));
    auto g = at::detail::createCPUGenerator(0);
    flowkit::Conditioning c = d.sample_conditions(0, 3, g);
    auto shapes = d.condition_shapes();
    EXPECT_EQ(shapes.size(), c.names().size());
    for (const auto& [name, shape] : shapes) {
      std::vector<int64_t> row(c.at(name).sizes().begin() + 1, c.at(name).sizes().end());
      EXPECT_EQ(row, shape) << name;
    }
    EXPECT_NE(flowkit::capability<flowkit::Environment>(static_cast<flowkit::Domain&>(d)), nullptr);
  }
}

// The dispersive term needs the representations capability, and says so.
TEST(Dm1Dispersive, NeedsARepresentationModel) {
  AnalyticU model(0.0, 1.0);
  MeanFlowLoss loss(meanflow({{"dispersive_weight", 0.5}}));
  auto g = at::detail::createCPUGenerator(0);
  flowkit::Batch b;
  b.set("x", torch::zeros({4, 1}));
  try {
    loss.compute(model, nullptr, b, g);
    FAIL() << "expected flowkit::Error";
  } catch (const flowkit::Error& e) {
    EXPECT_THAT_MSG(e.what(), "dm1.meanflow needs a model exposing its representations");
  }
}
