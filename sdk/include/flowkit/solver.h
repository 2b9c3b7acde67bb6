// flowkit/solver.h — a sampler: integrates a vector field over an explicit time grid.
#pragma once
#include <functional>
#include <vector>

#include "flowkit/component.h"
#include "flowkit/tensor_map.h"

namespace flowkit {

class Model;
class Path;

// dx/dt = f(x, t); t is a 0-dim tensor.
using VectorField = std::function<torch::Tensor(const torch::Tensor& x, const torch::Tensor& t)>;

struct SolveResult {
  torch::Tensor x;                          // state at the last grid time
  int64_t nfe = 0;                          // number of vector-field evaluations
  std::vector<torch::Tensor> intermediates; // states at every grid time (if requested)
  // Further named outputs of a sample beyond "x" (a crystal's per-atom "frac" and "types"),
  // merged into the sample batch the domain evaluates and writes.
  TensorMap fields;
};

struct SampleRequest {
  int64_t n = 0;                      // number of samples
  std::vector<int64_t> item_shape;    // shape of one sample
  Conditioning cond;                  // passed to the model
  int64_t steps = 0;                  // 0: the solver's configured default
  bool keep_intermediates = false;
  torch::TensorOptions options;       // dtype/device of the samples
};

class Solver : public Component {
 public:
  ~Solver() override;

  // Integrates from x0 at grid[0] through every time of `grid` (1-D, monotone, either
  // direction). Pure: no hidden step index; `gen` feeds stochastic solvers.
  virtual SolveResult integrate(const VectorField& f, const torch::Tensor& x0,
                                const torch::Tensor& grid, torch::Generator& gen,
                                bool keep_intermediates = false) const = 0;

  // Generates samples with a trained model. The default draws x0 from the path's prior and
  // integrates the model's velocity over `grid(steps)` without autograd. Methods whose
  // sampler is not a plain ODE in t (sigma-space Heun, Bayesian updates, one-step maps)
  // override it. `path` is null when the pipeline has none; the default then throws.
  virtual SolveResult sample(Model& model, const Path* path, const SampleRequest& request,
                             torch::Generator& gen) const;

  // The time grid used by `sample` for `steps` steps (0: configured default).
  virtual torch::Tensor grid(int64_t steps) const = 0;
};

// Explicit Euler through every time of `grid`: the generic `integrate()` of samplers whose
// real work happens in `sample()` (one-step maps, Bayesian updates). Since API 2.1.
SolveResult euler_integrate(const VectorField& f, const torch::Tensor& x0, const torch::Tensor& grid,
                            bool keep_intermediates = false);

}  // namespace flowkit
