// The EMA of the weights, with warm-up, and swapping it into the model.
#include "session/state.h"

namespace flowkit::core {

Ema::Ema(Model& model, double decay) : model_(model), decay_(decay), params_(model.module().parameters()) {
  for (const auto& p : params_) weights_.push_back(p.detach().clone());
}

void Ema::update(int64_t step) {
  if (!enabled()) return;
  // Warm-up: early averages would otherwise be dominated by the random initialisation.
  const double d = std::min(decay_, (1.0 + static_cast<double>(step)) / (10.0 + static_cast<double>(step)));
  torch::NoGradGuard no_grad;
  // One op per tensor: w <- d w + (1 - d) p = w + (1 - d)(p - w).
  for (size_t i = 0; i < params_.size(); ++i) weights_[i].lerp_(params_[i], 1 - d);
}

std::unique_ptr<ScopedParameterSwap> Ema::swap_in(bool use) {
  static const std::vector<torch::Tensor> none;
  return std::make_unique<ScopedParameterSwap>(model_.module(), use && enabled() ? weights_ : none);
}

}  // namespace flowkit::core
