// flowkit/capabilities/ode_integrator.h — a solver that is an ODE integrator over an explicit
// time grid, and the base class of samplers that integrate the model's velocity from the
// path's prior.
#pragma once
#include <functional>

#include "flowkit/solver.h"

namespace flowkit {

// dx/dt = f(x, t); t is a 0-dim tensor.
using VectorField = std::function<torch::Tensor(const torch::Tensor& x, const torch::Tensor& t)>;

class OdeIntegrator {
 public:
  virtual ~OdeIntegrator();
  // Integrates from x0 at grid[0] through every time of `grid` (1-D, monotone, either
  // direction). Pure: no hidden step index; `gen` feeds stochastic integrators.
  virtual SolveResult integrate(const VectorField& f, const torch::Tensor& x0, const torch::Tensor& grid,
                                torch::Generator& gen, bool keep_intermediates = false) const = 0;
  // The time grid for `steps` steps (0: the configured default).
  virtual torch::Tensor grid(int64_t steps) const = 0;
};

// A sampler that draws x0 from the path's prior and integrates the model's velocity over
// grid(steps) without autograd: all an ODE/SDE solver has to write is integrate() and grid().
class IntegratingSolver : public Solver, public OdeIntegrator {
 public:
  SolveResult sample(Model& model, const Path* path, const SampleRequest& request,
                     torch::Generator& gen) const override;
};

// Explicit Euler through every time of `grid`.
SolveResult euler_integrate(const VectorField& f, const torch::Tensor& x0, const torch::Tensor& grid,
                            bool keep_intermediates = false);

}  // namespace flowkit
