// flowkit/path.h — a probability path (interpolant) between a prior and the data.
// Conversions (velocity -> data estimate, score) and an exposed noise kernel are
// capabilities: flowkit/capabilities/velocity_conversions.h, noise_kernel.h.
#pragma once
#include <vector>

#include "flowkit/component.h"
#include "flowkit/tensor_map.h"

namespace flowkit {

// Everything a loss could need from one draw of the path. Convention (as
// facebookresearch/flow_matching): t = 0 is the source/noise, t = 1 the data.
struct PathSample {
  torch::Tensor t;    // [B]
  torch::Tensor x0;   // source sample
  torch::Tensor x1;   // data sample
  torch::Tensor xt;   // point on the path at t
  torch::Tensor dxt;  // d/dt of xt (the conditional velocity)
  TensorMap extras;   // method-specific quantities (augmented dimensions, accuracies...)
};

class Path : public Component {
 public:
  ~Path() override;

  // Pure function of its inputs: no randomness, no state. t has shape [B].
  virtual PathSample sample(const torch::Tensor& x0, const torch::Tensor& x1,
                            const torch::Tensor& t) const = 0;
  // n draws of the source distribution, each of shape item_shape.
  virtual torch::Tensor prior(int64_t n, const std::vector<int64_t>& item_shape,
                              torch::Generator& gen, const torch::TensorOptions& options) const = 0;
};

}  // namespace flowkit
