// standard/ode_solvers.h — fixed-step ODE solvers (Euler, midpoint, Heun, RK4), adaptive
// Dormand–Prince 5(4), and Euler–Maruyama for the marginal-preserving SDE.
#pragma once
#include <torch/torch.h>

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "flowkit/config.h"
#include "flowkit/registry.h"
#include "flowkit/capabilities/ode_integrator.h"

namespace standard {

// The time grid shared by all solvers: an explicit `time_grid`, or `steps` uniform steps
// from t0 to t1 (defaults: plugin.json).
struct GridOptions {
  int64_t steps = 0;
  std::optional<std::vector<double>> time_grid;
  double t0 = 0;
  double t1 = 0;
};
// steps > 0: a uniform grid with that many steps (an explicit request wins); steps == 0:
// the configured time_grid if any, else a uniform grid of options.steps. 1-D float64, CPU.
torch::Tensor make_grid(const GridOptions& options, int64_t steps);
// Reads steps, time_grid, t0, t1; checks t0 != t1 and that time_grid is strictly monotone.
GridOptions read_grid_options(const flowkit::Config& cfg);

// One step of size h from (x, t); adds the number of field evaluations to *nfe. Pure.
using StepFunction = torch::Tensor (*)(const flowkit::VectorField& f, const torch::Tensor& x, double t, double h,
                                       int64_t* nfe);
torch::Tensor euler_step(const flowkit::VectorField& f, const torch::Tensor& x, double t, double h, int64_t* nfe);
torch::Tensor midpoint_step(const flowkit::VectorField& f, const torch::Tensor& x, double t, double h, int64_t* nfe);
torch::Tensor heun_step(const flowkit::VectorField& f, const torch::Tensor& x, double t, double h, int64_t* nfe);
torch::Tensor rk4_step(const flowkit::VectorField& f, const torch::Tensor& x, double t, double h, int64_t* nfe);

class FixedStepSolver : public flowkit::IntegratingSolver {
 public:
  FixedStepSolver(std::string method, StepFunction step, GridOptions grid);
  flowkit::SolveResult integrate(const flowkit::VectorField& f, const torch::Tensor& x0, const torch::Tensor& grid,
                                 torch::Generator& gen, bool keep_intermediates = false) const override;
  torch::Tensor grid(int64_t steps) const override { return make_grid(grid_, steps); }
  const std::string& method() const { return method_; }

 private:
  std::string method_;
  StepFunction step_;
  GridOptions grid_;
};

// The tolerances of `standard.dopri5` (defaults: plugin.json).
struct Dopri5Options {
  double atol = 0;
  double rtol = 0;
  int64_t max_steps = 0;  // accepted + rejected steps over one integrate() call
};
// Reads atol, rtol, max_steps (the grid keys: read_grid_options).
Dopri5Options dopri5_options(const flowkit::Config& cfg);

// Adaptive Dormand–Prince 5(4) with FSAL, Hairer's initial step selection and the
// error norm RMS(err / (atol + rtol max(|x|, |x_new|))). It steps between successive grid
// times (never across one) and returns the states there; the step size carries over.
class Dopri5Solver : public flowkit::IntegratingSolver {
 public:
  Dopri5Solver(Dopri5Options options, GridOptions grid) : options_(options), grid_(std::move(grid)) {}
  flowkit::SolveResult integrate(const flowkit::VectorField& f, const torch::Tensor& x0, const torch::Tensor& grid,
                                 torch::Generator& gen, bool keep_intermediates = false) const override;
  torch::Tensor grid(int64_t steps) const override { return make_grid(grid_, steps); }

 private:
  Dopri5Options options_;
  GridOptions grid_;
};

// integrate(): x += f(x, t) h + g sqrt(|h|) N(0, I) (f is the full drift).
// sample(): drift v + (g^2 / 2) score with the path's VelocityConversions score, which
// has the same marginals as the probability-flow ODE for any constant g.
class EulerMaruyamaSolver : public flowkit::IntegratingSolver {
 public:
  EulerMaruyamaSolver(double diffusion, GridOptions grid) : diffusion_(diffusion), grid_(std::move(grid)) {}
  flowkit::SolveResult integrate(const flowkit::VectorField& f, const torch::Tensor& x0, const torch::Tensor& grid,
                                 torch::Generator& gen, bool keep_intermediates = false) const override;
  flowkit::SolveResult sample(flowkit::Model& model, const flowkit::Path* path, const flowkit::SampleRequest& request,
                              torch::Generator& gen) const override;
  torch::Tensor grid(int64_t steps) const override { return make_grid(grid_, steps); }
  double diffusion() const { return diffusion_; }

 private:
  double diffusion_;
  GridOptions grid_;
};

// Factories: standard.euler, .midpoint, .heun, .rk4, .dopri5, .euler_maruyama.
std::unique_ptr<flowkit::Component> make_euler(const flowkit::Config& cfg, const flowkit::BuildContext& ctx);
std::unique_ptr<flowkit::Component> make_midpoint(const flowkit::Config& cfg, const flowkit::BuildContext& ctx);
std::unique_ptr<flowkit::Component> make_heun(const flowkit::Config& cfg, const flowkit::BuildContext& ctx);
std::unique_ptr<flowkit::Component> make_rk4(const flowkit::Config& cfg, const flowkit::BuildContext& ctx);
std::unique_ptr<flowkit::Component> make_dopri5(const flowkit::Config& cfg, const flowkit::BuildContext& ctx);
std::unique_ptr<flowkit::Component> make_euler_maruyama(const flowkit::Config& cfg, const flowkit::BuildContext& ctx);

}  // namespace standard
