// flowkit/solver.h — a sampler: generates samples with a trained model. Whether it is an ODE
// integrator (capabilities/ode_integrator.h), a one-step map or a Bayesian update is its own
// business; it implements only what it is.
#pragma once
#include <vector>

#include "flowkit/component.h"
#include "flowkit/tensor_map.h"

namespace flowkit {

class Model;
class Path;

struct SolveResult {
  torch::Tensor x;                          // the sample ("x")
  int64_t nfe = 0;                          // number of network evaluations
  std::vector<torch::Tensor> intermediates; // states along the way (if requested)
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
  // `path` is null when the pipeline has none (a normalizing flow). Runs without autograd
  // unless the sampler itself needs gradients (guidance).
  virtual SolveResult sample(Model& model, const Path* path, const SampleRequest& request,
                             torch::Generator& gen) const = 0;
};

}  // namespace flowkit
