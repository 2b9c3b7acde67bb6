// Fixed-step, adaptive (Dormand–Prince 5(4)) and Euler–Maruyama solvers.
#include <torch/torch.h>

#include <algorithm>
#include <cmath>

#include "flowkit/capabilities/velocity_conversions.h"
#include "flowkit/capability.h"
#include "flowkit/random.h"
#include "flowkit/error.h"
#include "flowkit/model.h"
#include "flowkit/path.h"
#include "standard/ode_solvers.h"
#include "standard/util.h"

namespace standard {

using flowkit::SolveResult;
using flowkit::VectorField;

// ---- grids ------------------------------------------------------------------------------

torch::Tensor make_grid(const GridOptions& o, int64_t steps) {
  auto dbl = torch::TensorOptions().dtype(torch::kDouble);
  if (steps < 0) throw flowkit::Error("solver grid: steps must be >= 0, got " + std::to_string(steps));
  if (steps == 0 && o.time_grid) return torch::tensor(*o.time_grid, dbl);
  return torch::linspace(o.t0, o.t1, (steps > 0 ? steps : o.steps) + 1, dbl);
}

GridOptions read_grid_options(const flowkit::Config& cfg) {
  GridOptions o;
  o.steps = cfg.get<int64_t>("steps");
  o.time_grid = optional_number_array(cfg, "time_grid");
  o.t0 = cfg.get<double>("t0");
  o.t1 = cfg.get<double>("t1");
  if (o.t0 == o.t1) cfg.fail("t1", "must differ from t0");
  if (o.time_grid) {
    const auto& g = *o.time_grid;
    if (g.size() < 2) cfg.fail("time_grid", "needs at least two times");
    const double dir = g.back() > g.front() ? 1.0 : -1.0;
    for (size_t i = 1; i < g.size(); ++i)
      if (!(dir * (g[i] - g[i - 1]) > 0)) cfg.fail("time_grid", "times must be strictly monotone");
  }
  return o;
}

static std::vector<double> grid_values(const torch::Tensor& grid) {
  torch::Tensor g = grid.to(torch::kCPU, torch::kDouble).contiguous().reshape({-1});
  if (g.numel() < 1) throw flowkit::Error("solver: empty time grid");
  return std::vector<double>(g.data_ptr<double>(), g.data_ptr<double>() + g.numel());
}

static torch::Tensor time_tensor(double t, const torch::Tensor& like) { return torch::scalar_tensor(t, like.options()); }

// ---- fixed-step methods -----------------------------------------------------------------

torch::Tensor euler_step(const VectorField& f, const torch::Tensor& x, double t, double h, int64_t* nfe) {
  *nfe += 1;
  return x + h * f(x, time_tensor(t, x));
}

torch::Tensor midpoint_step(const VectorField& f, const torch::Tensor& x, double t, double h, int64_t* nfe) {
  *nfe += 2;
  torch::Tensor k1 = f(x, time_tensor(t, x));
  return x + h * f(x + (0.5 * h) * k1, time_tensor(t + 0.5 * h, x));
}

torch::Tensor heun_step(const VectorField& f, const torch::Tensor& x, double t, double h, int64_t* nfe) {
  *nfe += 2;
  torch::Tensor k1 = f(x, time_tensor(t, x));
  torch::Tensor k2 = f(x + h * k1, time_tensor(t + h, x));
  return x + (0.5 * h) * (k1 + k2);
}

torch::Tensor rk4_step(const VectorField& f, const torch::Tensor& x, double t, double h, int64_t* nfe) {
  *nfe += 4;
  torch::Tensor k1 = f(x, time_tensor(t, x));
  torch::Tensor k2 = f(x + (0.5 * h) * k1, time_tensor(t + 0.5 * h, x));
  torch::Tensor k3 = f(x + (0.5 * h) * k2, time_tensor(t + 0.5 * h, x));
  torch::Tensor k4 = f(x + h * k3, time_tensor(t + h, x));
  return x + (h / 6.0) * (k1 + 2 * k2 + 2 * k3 + k4);
}

FixedStepSolver::FixedStepSolver(std::string method, StepFunction step, GridOptions grid)
    : method_(std::move(method)), step_(step), grid_(std::move(grid)) {}

SolveResult FixedStepSolver::integrate(const VectorField& f, const torch::Tensor& x0, const torch::Tensor& grid,
                                       torch::Generator&, bool keep) const {
  std::vector<double> ts = grid_values(grid);
  SolveResult r;
  torch::Tensor x = x0;
  if (keep) r.intermediates.push_back(x);
  for (size_t i = 0; i + 1 < ts.size(); ++i) {
    x = step_(f, x, ts[i], ts[i + 1] - ts[i], &r.nfe);
    if (keep) r.intermediates.push_back(x);
  }
  r.x = x;
  return r;
}

// ---- Dormand–Prince 5(4) ----------------------------------------------------------------

namespace {
constexpr double c2 = 1.0 / 5, c3 = 3.0 / 10, c4 = 4.0 / 5, c5 = 8.0 / 9;
constexpr double a21 = 1.0 / 5;
constexpr double a31 = 3.0 / 40, a32 = 9.0 / 40;
constexpr double a41 = 44.0 / 45, a42 = -56.0 / 15, a43 = 32.0 / 9;
constexpr double a51 = 19372.0 / 6561, a52 = -25360.0 / 2187, a53 = 64448.0 / 6561, a54 = -212.0 / 729;
constexpr double a61 = 9017.0 / 3168, a62 = -355.0 / 33, a63 = 46732.0 / 5247, a64 = 49.0 / 176,
                 a65 = -5103.0 / 18656;
// 5th-order weights (also the 7th stage's row: FSAL).
constexpr double b1 = 35.0 / 384, b3 = 500.0 / 1113, b4 = 125.0 / 192, b5 = -2187.0 / 6784, b6 = 11.0 / 84;
// 5th minus 4th order weights.
constexpr double e1 = 71.0 / 57600, e3 = -71.0 / 16695, e4 = 71.0 / 1920, e5 = -17253.0 / 339200,
                 e6 = 22.0 / 525, e7 = -1.0 / 40;

double rms(const torch::Tensor& v) { return std::sqrt(v.to(torch::kDouble).pow(2).mean().item<double>()); }
}  // namespace

SolveResult Dopri5Solver::integrate(const VectorField& f, const torch::Tensor& x0, const torch::Tensor& grid,
                                    torch::Generator&, bool keep) const {
  std::vector<double> ts = grid_values(grid);
  SolveResult r;
  torch::Tensor x = x0;
  if (keep) r.intermediates.push_back(x);
  if (ts.size() < 2) {
    r.x = x;
    return r;
  }
  const double dir = ts.back() >= ts.front() ? 1.0 : -1.0;
  const double atol = options_.atol, rtol = options_.rtol;

  // Initial step (Hairer, Nørsett & Wanner, Solving ODEs I, II.4).
  torch::Tensor k1 = f(x, time_tensor(ts[0], x));
  r.nfe += 1;
  double h;
  {
    torch::Tensor scale = atol + rtol * x.abs();
    double d0 = rms(x / scale), d1 = rms(k1 / scale);
    double h0 = (d0 < 1e-5 || d1 < 1e-5) ? 1e-6 : 0.01 * d0 / d1;
    torch::Tensor f1 = f(x + dir * h0 * k1, time_tensor(ts[0] + dir * h0, x));
    r.nfe += 1;
    double d2 = rms((f1 - k1) / scale) / h0;
    double m = std::max(d1, d2);
    double h1 = m <= 1e-15 ? std::max(1e-6, h0 * 1e-3) : std::pow(0.01 / m, 1.0 / 5.0);
    h = dir * std::min(100 * h0, h1);
  }

  int64_t steps = 0;
  for (size_t i = 0; i + 1 < ts.size(); ++i) {
    double t = ts[i];
    const double t_end = ts[i + 1];
    while (dir * (t_end - t) > 0) {
      if (steps >= options_.max_steps)
        throw flowkit::Error("dopri5: more than max_steps = " + std::to_string(options_.max_steps) +
                             " steps (loosen atol/rtol or raise max_steps)");
      double hh = h;
      bool clamped = false;
      if (dir * (t + hh - t_end) >= 0) {
        hh = t_end - t;
        clamped = true;
      }
      if (std::abs(hh) < 1e-14 * std::max(1.0, std::abs(t)))
        throw flowkit::Error("dopri5: step size underflow at t = " + std::to_string(t));
      torch::Tensor k2 = f(x + hh * (a21 * k1), time_tensor(t + c2 * hh, x));
      torch::Tensor k3 = f(x + hh * (a31 * k1 + a32 * k2), time_tensor(t + c3 * hh, x));
      torch::Tensor k4 = f(x + hh * (a41 * k1 + a42 * k2 + a43 * k3), time_tensor(t + c4 * hh, x));
      torch::Tensor k5 = f(x + hh * (a51 * k1 + a52 * k2 + a53 * k3 + a54 * k4), time_tensor(t + c5 * hh, x));
      torch::Tensor k6 =
          f(x + hh * (a61 * k1 + a62 * k2 + a63 * k3 + a64 * k4 + a65 * k5), time_tensor(t + hh, x));
      torch::Tensor y = x + hh * (b1 * k1 + b3 * k3 + b4 * k4 + b5 * k5 + b6 * k6);
      torch::Tensor k7 = f(y, time_tensor(t + hh, x));
      r.nfe += 6;
      ++steps;
      torch::Tensor err = hh * (e1 * k1 + e3 * k3 + e4 * k4 + e5 * k5 + e6 * k6 + e7 * k7);
      torch::Tensor scale = atol + rtol * torch::max(x.abs(), y.abs());
      double en = rms(err / scale);
      if (!std::isfinite(en)) throw flowkit::Error("dopri5: non-finite error estimate at t = " + std::to_string(t));
      double factor = en == 0 ? 10.0 : std::clamp(0.9 * std::pow(en, -0.2), 0.2, 10.0);
      if (en <= 1.0) {
        t = clamped ? t_end : t + hh;
        x = y;
        k1 = k7;
        // A step shortened to hit a grid time says little about the next one.
        if (!(clamped && std::abs(hh) < std::abs(h))) h = hh * factor;
      } else {
        h = hh * std::min(factor, 1.0);
      }
    }
    if (keep) r.intermediates.push_back(x);
  }
  r.x = x;
  return r;
}

// ---- Euler–Maruyama ---------------------------------------------------------------------

SolveResult EulerMaruyamaSolver::integrate(const VectorField& f, const torch::Tensor& x0, const torch::Tensor& grid,
                                           torch::Generator& gen, bool keep) const {
  std::vector<double> ts = grid_values(grid);
  SolveResult r;
  torch::Tensor x = x0;
  if (keep) r.intermediates.push_back(x);
  for (size_t i = 0; i + 1 < ts.size(); ++i) {
    const double h = ts[i + 1] - ts[i];
    torch::Tensor drift = f(x, time_tensor(ts[i], x));
    r.nfe += 1;
    x = x + h * drift;
    if (diffusion_ != 0) x = x + (diffusion_ * std::sqrt(std::abs(h))) * flowkit::random::randn(x.sizes(), gen, x.options());
    if (keep) r.intermediates.push_back(x);
  }
  r.x = x;
  return r;
}

SolveResult EulerMaruyamaSolver::sample(flowkit::Model& model, const flowkit::Path* path,
                                        const flowkit::SampleRequest& request, torch::Generator& gen) const {
  if (!path) throw flowkit::Error("standard.euler_maruyama needs a path (prior and score), but the pipeline has none");
  torch::NoGradGuard no_grad;
  torch::Tensor x0 = path->prior(request.n, request.item_shape, gen, request.options);
  torch::Tensor times = grid(request.steps);
  const double half_g2 = 0.5 * diffusion_ * diffusion_;
  const flowkit::Conditioning& cond = request.cond;
  const flowkit::VelocityConversions* conversions =
      half_g2 == 0 ? nullptr
                   : &flowkit::require_capability<flowkit::VelocityConversions>(
                         path, "standard.euler_maruyama", "a path that turns velocities into scores (VelocityConversions, e.g. standard.affine)");
  VectorField drift = [&](const torch::Tensor& x, const torch::Tensor& t) {
    torch::Tensor tb = t.expand({x.size(0)});
    torch::Tensor v = model.forward(x, tb, cond);
    if (half_g2 == 0) return v;
    return v + half_g2 * conversions->velocity_to_score(v, x, tb);
  };
  return integrate(drift, x0, times, gen, request.keep_intermediates);
}

// ---- factories --------------------------------------------------------------------------

std::unique_ptr<flowkit::Component> make_euler(const flowkit::Config& cfg, const flowkit::BuildContext&) {
  return std::make_unique<FixedStepSolver>("euler", &euler_step, read_grid_options(cfg));
}
std::unique_ptr<flowkit::Component> make_midpoint(const flowkit::Config& cfg, const flowkit::BuildContext&) {
  return std::make_unique<FixedStepSolver>("midpoint", &midpoint_step, read_grid_options(cfg));
}
std::unique_ptr<flowkit::Component> make_heun(const flowkit::Config& cfg, const flowkit::BuildContext&) {
  return std::make_unique<FixedStepSolver>("heun", &heun_step, read_grid_options(cfg));
}
std::unique_ptr<flowkit::Component> make_rk4(const flowkit::Config& cfg, const flowkit::BuildContext&) {
  return std::make_unique<FixedStepSolver>("rk4", &rk4_step, read_grid_options(cfg));
}
Dopri5Options dopri5_options(const flowkit::Config& cfg) {
  Dopri5Options o;
  o.atol = cfg.get<double>("atol");
  o.rtol = cfg.get<double>("rtol");
  o.max_steps = cfg.get<int64_t>("max_steps");
  return o;
}

std::unique_ptr<flowkit::Component> make_dopri5(const flowkit::Config& cfg, const flowkit::BuildContext&) {
  // The grid only says where states are reported (one interval by default: steps = 1).
  return std::make_unique<Dopri5Solver>(dopri5_options(cfg), read_grid_options(cfg));
}
std::unique_ptr<flowkit::Component> make_euler_maruyama(const flowkit::Config& cfg, const flowkit::BuildContext&) {
  double g = cfg.get<double>("diffusion");
  return std::make_unique<EulerMaruyamaSolver>(g, read_grid_options(cfg));
}

}  // namespace standard
