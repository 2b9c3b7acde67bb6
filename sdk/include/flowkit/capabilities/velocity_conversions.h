// flowkit/capabilities/velocity_conversions.h — a path that turns a velocity prediction into
// a data estimate x̂1 and a score (guidance, steering, stochastic samplers need them).
#pragma once
#include "flowkit/tensor_map.h"

namespace flowkit {

class VelocityConversions {
 public:
  virtual ~VelocityConversions();
  // E[x1 | x_t = x] implied by the marginal velocity v at (x, t); t is [B] or 0-dim.
  virtual torch::Tensor velocity_to_data(const torch::Tensor& velocity, const torch::Tensor& x,
                                         const torch::Tensor& t) const = 0;
  // ∇_x log p_t(x) implied by v at (x, t).
  virtual torch::Tensor velocity_to_score(const torch::Tensor& velocity, const torch::Tensor& x,
                                          const torch::Tensor& t) const = 0;
};

}  // namespace flowkit
