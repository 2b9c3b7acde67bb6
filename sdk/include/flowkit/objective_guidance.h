// flowkit/objective_guidance.h — guidance by the gradient of an objective on the data
// estimate: v' = v − scale · ∇_x̂ L(x̂), x̂ = E[x1 | x_t] from the path's velocity_to_data.
//
// The gradient is taken with respect to x̂ only (no backpropagation through the network, as
// FlowChef's gradient skipping): one network evaluation per step. A subclass writes only
// the objective.
#pragma once
#include "flowkit/guidance.h"

namespace flowkit {

class ObjectiveGuidance : public Guidance {
 public:
  // window.scale: the step of the gradient in velocity units.
  explicit ObjectiveGuidance(GuidanceWindow window) : window_(window) {}
  // Per-item objective [B] of the data estimate x̂ [B, ...] (to be lowered); differentiable in x̂.
  virtual torch::Tensor objective(const torch::Tensor& x_hat, const Conditioning& cond) const = 0;
  // Needs the path's velocity_conversions capability (an error names the path otherwise).
  torch::Tensor velocity(Model& model, const Path* path, const torch::Tensor& x, const torch::Tensor& t,
                         const Conditioning& cond, int64_t* evaluations) const override;
  const GuidanceWindow& window() const { return window_; }

 private:
  GuidanceWindow window_;
};

}  // namespace flowkit
