// The EMA of the weights, with warm-up, and swapping it into the model.
#include "session/state.h"

namespace flowkit::core {

Ema::Ema(Model& model, double decay) : model_(model), decay_(decay) {
  for (const auto& p : model_.module().parameters()) weights_.push_back(p.detach().clone());
}

void Ema::update(int64_t step) {
  if (!enabled()) return;
  // Warm-up: early averages would otherwise be dominated by the random initialisation.
  const double d = std::min(decay_, (1.0 + static_cast<double>(step)) / (10.0 + static_cast<double>(step)));
  torch::NoGradGuard no_grad;
  auto params = model_.module().parameters();
  for (size_t i = 0; i < params.size(); ++i) weights_[i].mul_(d).add_(params[i].detach(), 1 - d);
}

std::unique_ptr<ScopedParameterSwap> Ema::swap_in(bool use) {
  static const std::vector<torch::Tensor> none;
  return std::make_unique<ScopedParameterSwap>(model_.module(), use && enabled() ? weights_ : none);
}

}  // namespace flowkit::core
