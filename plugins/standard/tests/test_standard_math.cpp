// Numerical checks of the `standard` plugin: schedulers, path conversions, the score,
// solver convergence orders, Dormand–Prince, Euler–Maruyama and the domain metrics.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cmath>
#include <functional>

#include "standard/affine_path.h"
#include "standard/domains.h"
#include "standard/metrics.h"
#include "standard/ode_solvers.h"
#include "test_util.h"

using namespace standard;

namespace {

torch::Generator make_gen(uint64_t seed) { return at::detail::createCPUGenerator(seed); }
const auto kD = torch::TensorOptions().dtype(torch::kDouble);

double max_abs(const torch::Tensor& a, const torch::Tensor& b) { return (a - b).abs().max().item<double>(); }

// Options built the way the factories build them: the manifest's defaults plus `overrides`.
std::shared_ptr<const Scheduler> scheduler(const nlohmann::json& overrides) {
  return make_scheduler(scheduler_options(resolved_config("standard.affine", overrides)));
}
GridOptions grid_options(const std::string& solver, const nlohmann::json& overrides = nlohmann::json::object()) {
  return read_grid_options(resolved_config("standard." + solver, overrides));
}

struct ClosedForm {
  std::string name;
  std::shared_ptr<const Scheduler> s;
  std::function<double(double)> alpha, sigma;
};

std::vector<ClosedForm> schedulers() {
  const double bmin = 0.1, bmax = 20.0;
  auto T = [=](double t) { return 0.5 * (1 - t) * (1 - t) * (bmax - bmin) + (1 - t) * bmin; };
  return {
      {"condot", scheduler({{"scheduler", "condot"}}), [](double t) { return t; }, [](double t) { return 1 - t; }},
      {"polynomial3", scheduler({{"scheduler", "polynomial"}, {"exponent", 3.0}}), [](double t) { return t * t * t; },
       [](double t) { return 1 - t * t * t; }},
      {"vp", scheduler({{"scheduler", "vp"}, {"beta_min", bmin}, {"beta_max", bmax}}), [=](double t) { return std::exp(-0.5 * T(t)); },
       [=](double t) { return std::sqrt(1 - std::exp(-T(t))); }},
      {"cosine", scheduler({{"scheduler", "cosine"}}), [](double t) { return std::sin(M_PI / 2 * t); },
       [](double t) { return std::cos(M_PI / 2 * t); }},
  };
}

}  // namespace

// ---- schedulers and the affine path -------------------------------------------------------

TEST(StandardPath, SchedulersMatchClosedFormsAndDerivatives) {
  torch::Tensor t = torch::linspace(0.05, 0.95, 19, kD);
  const double h = 1e-6;
  for (const auto& c : schedulers()) {
    SCOPED_TRACE(c.name);
    SchedulerOutput o = (*c.s)(t);
    SchedulerOutput plus = (*c.s)(t + h), minus = (*c.s)(t - h);
    auto acc = t.accessor<double, 1>();
    for (int64_t i = 0; i < t.size(0); ++i) {
      EXPECT_NEAR(o.alpha[i].item<double>(), c.alpha(acc[i]), 1e-12);
      EXPECT_NEAR(o.sigma[i].item<double>(), c.sigma(acc[i]), 1e-12);
    }
    EXPECT_LT(max_abs(o.d_alpha, (plus.alpha - minus.alpha) / (2 * h)), 1e-6);
    EXPECT_LT(max_abs(o.d_sigma, (plus.sigma - minus.sigma) / (2 * h)), 1e-6);
    // Endpoints: noise at t = 0 (up to the VP's small alpha), data at t = 1.
    SchedulerOutput end = (*c.s)(torch::tensor({1.0}, kD));
    EXPECT_NEAR(end.alpha.item<double>(), 1.0, 1e-12);
    EXPECT_NEAR(end.sigma.item<double>(), 0.0, 1e-12);
  }
}

TEST(StandardPath, DxtIsTheTimeDerivativeOfXt) {
  auto gen = make_gen(1);
  torch::Tensor x0 = torch::randn({16, 3, 2}, gen, kD), x1 = torch::randn({16, 3, 2}, gen, kD);
  torch::Tensor t = torch::rand({16}, gen, kD) * 0.9 + 0.05;
  const double h = 1e-6;
  for (const auto& c : schedulers()) {
    SCOPED_TRACE(c.name);
    AffinePath path(c.s);
    flowkit::PathSample s = path.sample(x0, x1, t);
    torch::Tensor fd = (path.sample(x0, x1, t + h).xt - path.sample(x0, x1, t - h).xt) / (2 * h);
    EXPECT_LT(max_abs(s.dxt, fd), 1e-5);
    // x_t itself: alpha x1 + sigma x0 with t broadcast over the item dimensions.
    auto coeff = (*c.s)(t);
    torch::Tensor expect = coeff.alpha.view({16, 1, 1}) * x1 + coeff.sigma.view({16, 1, 1}) * x0;
    EXPECT_LT(max_abs(s.xt, expect), 1e-12);
  }
}

TEST(StandardPath, ConversionsRoundTrip) {
  auto gen = make_gen(2);
  torch::Tensor x0 = torch::randn({32, 4}, gen, kD), x1 = torch::randn({32, 4}, gen, kD);
  torch::Tensor t = torch::rand({32}, gen, kD) * 0.8 + 0.1;
  for (const auto& c : schedulers()) {
    SCOPED_TRACE(c.name);
    AffinePath path(c.s);
    flowkit::PathSample s = path.sample(x0, x1, t);
    const torch::Tensor &x = s.xt, &v = s.dxt;
    EXPECT_LT(max_abs(path.velocity_to_target(v, x, t), x1), 1e-8);
    EXPECT_LT(max_abs(path.velocity_to_epsilon(v, x, t), x0), 1e-8);
    EXPECT_LT(max_abs(path.target_to_velocity(x1, x, t), v), 1e-8);
    EXPECT_LT(max_abs(path.epsilon_to_velocity(x0, x, t), v), 1e-8);
    EXPECT_LT(max_abs(path.target_to_epsilon(x1, x, t), x0), 1e-8);
    EXPECT_LT(max_abs(path.epsilon_to_target(x0, x, t), x1), 1e-8);
    torch::Tensor back = path.target_to_velocity(path.velocity_to_target(v, x, t), x, t);
    EXPECT_LT(max_abs(back, v), 1e-8);
  }
}

// Data x1 ~ N(mu, c^2 I), x0 ~ N(0, I): x_t ~ N(a mu, (a^2 c^2 + s^2) I), the exact score is
// -(x - a mu) / (a^2 c^2 + s^2), and the marginal velocity is
// v*(x) = da E[x1 | x] + ds E[x0 | x] with E[x1|x] = mu + a c^2 (x - a mu) / V,
// E[x0|x] = s (x - a mu) / V, V = a^2 c^2 + s^2 (Gaussian conditioning).
namespace {
torch::Tensor gaussian_velocity(const SchedulerOutput& o, const torch::Tensor& x, const torch::Tensor& mu, double c) {
  torch::Tensor V = o.alpha * o.alpha * c * c + o.sigma * o.sigma;
  torch::Tensor r = x - o.alpha * mu;
  return o.d_alpha * (mu + o.alpha * c * c * r / V) + o.d_sigma * (o.sigma * r / V);
}
}  // namespace

TEST(StandardPath, VelocityToScoreMatchesExactGaussianScore) {
  auto gen = make_gen(3);
  torch::Tensor mu = torch::tensor({1.5, -0.5, 0.25}, kD).unsqueeze(0);
  const double c = 0.6;
  for (const auto& sc : schedulers()) {
    SCOPED_TRACE(sc.name);
    AffinePath path(sc.s);
    for (double tv : {0.1, 0.35, 0.6, 0.9}) {
      torch::Tensor x = torch::randn({64, 3}, gen, kD) * 2;
      torch::Tensor t = torch::full({64}, tv, kD);
      SchedulerOutput o = path.coefficients(t, x);
      torch::Tensor v = gaussian_velocity(o, x, mu, c);
      torch::Tensor exact = -(x - o.alpha * mu) / (o.alpha * o.alpha * c * c + o.sigma * o.sigma);
      torch::Tensor score = path.velocity_to_score(v, x, t);
      EXPECT_LT(max_abs(score, exact), 1e-8 * (1 + exact.abs().max().item<double>())) << "t = " << tv;
      // A 0-dim time broadcasts too.
      EXPECT_LT(max_abs(path.velocity_to_score(v, x, torch::scalar_tensor(tv, kD)), exact), 1e-8 * (1 + exact.abs().max().item<double>()));
      // The data estimate E[x1 | x_t = x] of Gaussian data (Bayes): mu + a c^2 (x - a mu) / (a^2 c^2 + s^2).
      torch::Tensor x1_hat = mu + o.alpha * c * c * (x - o.alpha * mu) / (o.alpha * o.alpha * c * c + o.sigma * o.sigma);
      EXPECT_LT(max_abs(path.velocity_to_data(v, x, t), x1_hat), 1e-8 * (1 + x1_hat.abs().max().item<double>()));
    }
  }
}

// ---- fixed-step solvers: empirical order on dx/dt = -t x, x(t) = x(0) exp(-t^2/2) ---------

namespace {
flowkit::VectorField decay_field() {
  return [](const torch::Tensor& x, const torch::Tensor& t) { return -t * x; };
}

double fitted_order(StepFunction step, int64_t stages) {
  auto gen = make_gen(0);
  torch::Tensor x0 = torch::tensor({1.0, -2.0, 0.5}, kD);
  torch::Tensor exact = x0 * std::exp(-0.5);
  std::vector<double> lh, le;
  FixedStepSolver solver("test", step, grid_options("euler"));
  for (int64_t n : {8, 16, 32, 64}) {
    flowkit::SolveResult r = solver.integrate(decay_field(), x0, solver.grid(n), gen, true);
    EXPECT_EQ(r.nfe, n * stages);
    EXPECT_EQ(static_cast<int64_t>(r.intermediates.size()), n + 1);
    lh.push_back(std::log(1.0 / n));
    le.push_back(std::log(max_abs(r.x, exact)));
  }
  double mh = 0, me = 0;
  for (size_t i = 0; i < lh.size(); ++i) mh += lh[i] / lh.size(), me += le[i] / le.size();
  double num = 0, den = 0;
  for (size_t i = 0; i < lh.size(); ++i) num += (lh[i] - mh) * (le[i] - me), den += (lh[i] - mh) * (lh[i] - mh);
  return num / den;
}
}  // namespace

TEST(StandardSolvers, FixedStepOrdersOfConvergence) {
  EXPECT_NEAR(fitted_order(&euler_step, 1), 1.0, 0.3);
  EXPECT_NEAR(fitted_order(&midpoint_step, 2), 2.0, 0.3);
  EXPECT_NEAR(fitted_order(&heun_step, 2), 2.0, 0.3);
  EXPECT_NEAR(fitted_order(&rk4_step, 4), 4.0, 0.3);
}

TEST(StandardSolvers, GridsAndBackwardIntegration) {
  GridOptions g = grid_options("euler", {{"steps", 4}});
  EXPECT_TRUE(torch::allclose(make_grid(g, 0), torch::tensor({0.0, 0.25, 0.5, 0.75, 1.0}, kD)));
  EXPECT_EQ(make_grid(g, 10).size(0), 11);
  g.time_grid = std::vector<double>{0.0, 0.5, 0.9, 1.0};
  EXPECT_TRUE(torch::allclose(make_grid(g, 0), torch::tensor({0.0, 0.5, 0.9, 1.0}, kD)));
  // RK4 from t = 1 back to t = 0 recovers x(0).
  auto gen = make_gen(0);
  FixedStepSolver rk4("rk4", &rk4_step, grid_options("rk4"));
  torch::Tensor x1 = torch::tensor({std::exp(-0.5)}, kD);
  torch::Tensor back = torch::linspace(1.0, 0.0, 41, kD);
  EXPECT_NEAR(rk4.integrate(decay_field(), x1, back, gen).x.item<double>(), 1.0, 1e-7);
}

TEST(StandardSolvers, Dopri5MeetsToleranceAndAdapts) {
  auto gen = make_gen(0);
  // Harmonic oscillator (x, y)' = (y, -x) over [0, 2 pi]: the solution returns to the start.
  flowkit::VectorField rot = [](const torch::Tensor& x, const torch::Tensor&) {
    return torch::stack({x.select(-1, 1), -x.select(-1, 0)}, -1);
  };
  torch::Tensor x0 = torch::tensor({{1.0, 0.0}}, kD);
  GridOptions g = grid_options("dopri5", {{"steps", 1}, {"t1", 2 * M_PI}});
  int64_t nfe_loose = 0, nfe_tight = 0;
  for (double tol : {1e-3, 1e-6, 1e-9}) {
    Dopri5Solver solver({tol, tol, 100000}, g);
    flowkit::SolveResult r = solver.integrate(rot, x0, solver.grid(0), gen);
    double err = max_abs(r.x, x0);
    EXPECT_LT(err, 20 * tol * 2 * M_PI) << "tol " << tol;  // global error ~ tolerance x length
    if (tol == 1e-3) nfe_loose = r.nfe;
    if (tol == 1e-9) nfe_tight = r.nfe;
  }
  EXPECT_LT(nfe_loose * 3, nfe_tight);
  // Output at every grid time, each accurate: x(t) = x(0) exp(-t^2/2).
  Dopri5Solver solver({1e-8, 1e-8, 100000}, grid_options("dopri5"));
  torch::Tensor grid = torch::linspace(0.0, 2.0, 5, kD);
  flowkit::SolveResult r = solver.integrate(decay_field(), torch::tensor({2.0}, kD), grid, gen, true);
  ASSERT_EQ(r.intermediates.size(), 5u);
  for (int64_t i = 0; i < 5; ++i) {
    double t = grid[i].item<double>();
    EXPECT_NEAR(r.intermediates[i].item<double>(), 2.0 * std::exp(-0.5 * t * t), 1e-6);
  }
  // max_steps is enforced.
  Dopri5Solver tiny({1e-12, 1e-12, 3}, g);
  EXPECT_THROW(tiny.integrate(rot, x0, tiny.grid(0), gen), flowkit::Error);
}

TEST(StandardSolvers, EulerMaruyamaOrnsteinUhlenbeckMoments) {
  // dx = -x dt + g dW from x(0) = 2: mean 2 e^{-T}, variance g^2 (1 - e^{-2T}) / 2.
  auto gen = make_gen(7);
  const double g = 0.8, T = 1.0;
  GridOptions go = grid_options("euler_maruyama", {{"steps", 200}});
  EulerMaruyamaSolver em(g, go);
  flowkit::VectorField drift = [](const torch::Tensor& x, const torch::Tensor&) { return -x; };
  torch::Tensor x0 = torch::full({40000}, 2.0, kD);
  flowkit::SolveResult r = em.integrate(drift, x0, em.grid(0), gen);
  EXPECT_EQ(r.nfe, 200);
  EXPECT_NEAR(r.x.mean().item<double>(), 2 * std::exp(-T), 0.015);
  EXPECT_NEAR(r.x.var().item<double>(), g * g * (1 - std::exp(-2 * T)) / 2, 0.015);
  // A different generator state gives different paths; the same seed the same.
  auto g1 = make_gen(11), g2 = make_gen(11);
  EXPECT_TRUE(torch::equal(em.integrate(drift, x0.slice(0, 0, 10), em.grid(0), g1).x,
                           em.integrate(drift, x0.slice(0, 0, 10), em.grid(0), g2).x));
}

// ---- metrics ------------------------------------------------------------------------------

namespace {
}  // namespace

TEST(StandardMetrics, FrechetDistanceClosedForms) {
  // Commuting covariances: FD = |mu_a - mu_b|^2 + sum (sqrt(a_i) - sqrt(b_i))^2.
  torch::Tensor ca = torch::diag(torch::tensor({1.0, 4.0}, kD)), cb = torch::diag(torch::tensor({9.0, 1.0}, kD));
  torch::Tensor ma = torch::tensor({0.0, 1.0}, kD), mb = torch::tensor({2.0, 1.0}, kD);
  EXPECT_NEAR(frechet_distance_stats(ma, ca, mb, cb), 4.0 + 4.0 + 1.0, 1e-10);
  // Invariant under a common rotation (non-commuting case after rotating only one: check symmetry).
  torch::Tensor q = std::get<0>(torch::linalg::qr(torch::randn({2, 2}, kD)));
  EXPECT_NEAR(frechet_distance_stats(q.matmul(ma), q.matmul(ca).matmul(q.t()), q.matmul(mb), q.matmul(cb).matmul(q.t())),
              9.0, 1e-9);
  torch::Tensor cc = torch::tensor({2.0, 0.7, 0.7, 1.0}, kD).reshape({2, 2});
  EXPECT_NEAR(frechet_distance_stats(ma, ca, mb, cc), frechet_distance_stats(mb, cc, ma, ca), 1e-9);
  // 2x2 closed form: Tr sqrt(M) = sqrt(tr M + 2 sqrt(det M)) for M = A^1/2 C A^1/2 (SPD).
  const double detM = ca.det().item<double>() * cc.det().item<double>();
  const double trM = ca.matmul(cc).trace().item<double>();
  const double expected = 4.0 + (ca.trace() + cc.trace()).item<double>() - 2 * std::sqrt(trM + 2 * std::sqrt(detM));
  EXPECT_NEAR(frechet_distance_stats(ma, ca, mb, cc), expected, 1e-9);
  // From samples: identical sets give 0.
  auto gen = make_gen(3);
  torch::Tensor f = torch::randn({500, 6}, gen, kD);
  EXPECT_NEAR(frechet_distance(f, f), 0.0, 1e-8);
  EXPECT_NEAR(frechet_distance(f, f + 1.0), 6.0, 1e-8);
}

TEST(StandardMetrics, ClassEntropyAndNearestNeighbour) {
  torch::Tensor logits = torch::zeros({4, 3});
  logits.index_put_({0, 0}, 1.0), logits.index_put_({1, 1}, 1.0), logits.index_put_({2, 2}, 1.0), logits.index_put_({3, 2}, 1.0);
  EXPECT_NEAR(class_entropy(logits), -(2 * 0.25 * std::log(0.25) + 0.5 * std::log(0.5)), 1e-12);
  torch::Tensor train = torch::tensor({{0.0, 0.0}, {10.0, 0.0}});
  EXPECT_NEAR(nn_train_distance(torch::tensor({{3.0, 4.0}, {10.0, 1.0}}), train), (5.0 + 1.0) / 2, 1e-12);
}

TEST(StandardMetrics, ModeCoverage) {
  auto gen = make_gen(9);
  ModeStats all = mode_stats_points(sample_toy2d("8gaussians", 4000, gen), eight_gaussians_centers(),
                                    kEightGaussiansModeRadius, kModeMinShare);
  EXPECT_DOUBLE_EQ(all.coverage, 1.0);
  EXPECT_GT(all.precision, 0.95);
  torch::Tensor one = eight_gaussians_centers()[3].unsqueeze(0) + 0.35 * torch::randn({1000, 2}, gen, kD);
  ModeStats single = mode_stats_points(one, eight_gaussians_centers(), kEightGaussiansModeRadius, kModeMinShare);
  EXPECT_DOUBLE_EQ(single.coverage, 1.0 / 8);
  EXPECT_GT(single.precision, 0.95);
  ModeStats far = mode_stats_points(torch::randn({500, 2}, gen, kD) * 0.1, eight_gaussians_centers(),
                                    kEightGaussiansModeRadius, kModeMinShare);
  EXPECT_DOUBLE_EQ(far.coverage, 0.0);
  EXPECT_DOUBLE_EQ(far.precision, 0.0);
  ModeStats rings = mode_stats_rings(sample_toy2d("rings", 4000, gen), rings_radii(), kRingsModeRadius, kModeMinShare);
  EXPECT_DOUBLE_EQ(rings.coverage, 1.0);
  EXPECT_GT(rings.precision, 0.95);
}
