// flowkit/capabilities/prior_density.h — a path whose prior has a known density: what a
// likelihood by the instantaneous change of variables (flowkit/likelihood.h) starts from.
#pragma once
#include <torch/types.h>

namespace flowkit {

class PriorDensity {
 public:
  virtual ~PriorDensity();
  // log p_0(x) per item, [B], of x [B, ...] (natural log).
  virtual torch::Tensor prior_log_density(const torch::Tensor& x) const = 0;
};

}  // namespace flowkit
