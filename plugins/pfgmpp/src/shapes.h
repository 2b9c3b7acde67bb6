// Shape helpers shared by the plugin's sources (private).
#pragma once
#include <torch/torch.h>

#include <algorithm>
#include <vector>

namespace pfgmpp::detail {

inline int64_t numel_of(const std::vector<int64_t>& shape) {
  int64_t n = 1;
  for (int64_t s : shape) n *= s;
  return n;
}
inline std::vector<int64_t> batch_shape(int64_t n, const std::vector<int64_t>& item) {
  std::vector<int64_t> s{n};
  s.insert(s.end(), item.begin(), item.end());
  return s;
}
// [B] -> [B, 1, ...] to broadcast against `like`; 0-dim stays.
inline torch::Tensor per_row(const torch::Tensor& v, const torch::Tensor& like) {
  torch::Tensor t = v.to(like.device(), like.scalar_type());
  if (t.dim() == 0) return t;
  std::vector<int64_t> shape(static_cast<size_t>(std::max<int64_t>(like.dim(), 1)), 1);
  shape[0] = t.size(0);
  return t.reshape(shape);
}

}  // namespace pfgmpp::detail
