// flowkit/time_embedding.h — the transformer sinusoidal embedding of a time (or noise level),
// [sin(s·t·f_k), cos(s·t·f_k)] with f_k = 10000^(-k/half), k < half = dim/2 (a zero column pads
// an odd dim). The frequencies are computed once per device and dtype, not in every forward.
#pragma once
#include <c10/core/InferenceMode.h>
#include <torch/types.h>

#include <algorithm>
#include <cmath>

namespace flowkit {

class SinusoidalTimeEmbedding {
 public:
  SinusoidalTimeEmbedding(int64_t dim, double scale) : dim_(dim), scale_(scale) {}

  // t: a scalar or [B] -> [B, dim] (B = 1 for a scalar).
  torch::Tensor operator()(const torch::Tensor& t) {
    torch::Tensor args = scale_ * t.reshape({-1, 1}) * frequencies(t.options()).reshape({1, -1});
    torch::Tensor emb = torch::cat({torch::sin(args), torch::cos(args)}, 1);
    if (dim_ % 2 == 1) emb = torch::cat({emb, torch::zeros({emb.size(0), 1}, emb.options())}, 1);
    return emb;
  }

  int64_t dim() const { return dim_; }

 private:
  const torch::Tensor& frequencies(const torch::TensorOptions& like) {
    // Frequencies made under inference mode may not enter a graph that autograd records.
    if (!freqs_.defined() || freqs_.device() != like.device() || freqs_.scalar_type() != c10::typeMetaToScalarType(like.dtype()) ||
        (freqs_.is_inference() && !c10::InferenceMode::is_enabled())) {
      const int64_t half = dim_ / 2;
      torch::Tensor k = torch::arange(half, like.requires_grad(false));
      freqs_ = torch::exp(-std::log(10000.0) * k / std::max<int64_t>(half, 1));
    }
    return freqs_;
  }

  int64_t dim_;
  double scale_;
  torch::Tensor freqs_;
};

}  // namespace flowkit
