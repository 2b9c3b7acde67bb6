// The EMA of the weights, with warm-up, and swapping it into the model.
#include "session/state.h"

namespace flowkit::core {

Ema::Ema(Model& model, double decay, const torch::Tensor& flat)
    : model_(model), decay_(decay), params_(model.module().parameters()) {
  if (flat.defined()) {
    flat_params_ = flat;
    flat_weights_ = flat.detach().clone();
    int64_t offset = 0;
    for (const auto& p : params_) {
      weights_.push_back(flat_weights_.narrow(0, offset, p.numel()).view(p.sizes()));
      offset += p.numel();
    }
    return;
  }
  for (const auto& p : params_) weights_.push_back(p.detach().clone());
}

void Ema::update(int64_t step) {
  if (!enabled()) return;
  // Warm-up: early averages would otherwise be dominated by the random initialisation.
  const double d = std::min(decay_, (1.0 + static_cast<double>(step)) / (10.0 + static_cast<double>(step)));
  torch::NoGradGuard no_grad;
  // w <- d w + (1 - d) p = w + (1 - d)(p - w): one op on the flat buffer, else one per tensor.
  if (flat_weights_.defined()) {
    flat_weights_.lerp_(flat_params_, 1 - d);
    return;
  }
  for (size_t i = 0; i < params_.size(); ++i) weights_[i].lerp_(params_[i], 1 - d);
}

std::unique_ptr<ScopedParameterSwap> Ema::swap_in(bool use) {
  static const std::vector<torch::Tensor> none;
  return std::make_unique<ScopedParameterSwap>(model_.module(), use && enabled() ? weights_ : none);
}

}  // namespace flowkit::core
