// flowkit/capabilities/invertible.h — an invertible model (a normalizing flow): the map to
// its latent with the log-determinant, the inverse, and the exact log-likelihood.
#pragma once
#include "flowkit/tensor_map.h"

namespace flowkit {

struct LatentAndLogDet {
  torch::Tensor z;        // the latent, same shape as x
  torch::Tensor log_det;  // [B]: log |det dz/dx| per item
};

class InvertibleModel {
 public:
  virtual ~InvertibleModel();
  // x -> z = f(x) and log |det df/dx|.
  virtual LatentAndLogDet to_latent(const torch::Tensor& x, const Conditioning& cond) = 0;
  // z -> x = f^{-1}(z).
  virtual torch::Tensor from_latent(const torch::Tensor& z, const Conditioning& cond) = 0;
  // Exact log p(x) per item [B], in nats. Default: a standard normal base,
  // log N(f(x); 0, I) + log |det df/dx|.
  virtual torch::Tensor log_likelihood(const torch::Tensor& x, const Conditioning& cond);
};

// log N(z; 0, I) summed over all but the leading dimension: [B].
torch::Tensor standard_normal_log_density(const torch::Tensor& z);
// Bits per dimension of per-item log-likelihoods (nats) of items with `dims` dimensions:
// -mean(log_likelihood) / (dims ln 2).
double bits_per_dim(const torch::Tensor& log_likelihood, int64_t dims);

}  // namespace flowkit
