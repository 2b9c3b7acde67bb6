// Representation diagnostics: effective rank, mean pairwise distance, linear-probe accuracy.
#include "flowkit/core/diagnostics.h"

#include <torch/torch.h>

#include <cmath>

#include "flowkit/error.h"

namespace flowkit::core {

double effective_rank(const torch::Tensor& z_in) {
  torch::Tensor z = z_in.detach().to(torch::kCPU, torch::kDouble).flatten(1);
  if (z.size(0) < 2) throw Error("effective_rank: needs at least 2 rows");
  z = z - z.mean(0, true);
  torch::Tensor s = at::linalg_svdvals(z);
  const double total = s.sum().item<double>();
  if (!(total > 0)) return 0.0;
  torch::Tensor p = s / total;
  p = p.masked_select(p > 0);
  return std::exp(-(p * p.log()).sum().item<double>());
}

double mean_pairwise_distance(const torch::Tensor& z_in) {
  torch::Tensor z = z_in.detach().to(torch::kCPU, torch::kDouble).flatten(1);
  const int64_t n = z.size(0);
  if (n < 2) throw Error("mean_pairwise_distance: needs at least 2 rows");
  return torch::pdist(z).mean().item<double>();  // the n(n-1)/2 distinct pairs, no n x n matrix
}

double linear_probe_accuracy(const torch::Tensor& z_in, const torch::Tensor& labels_in, double train_fraction, double ridge) {
  torch::Tensor z = z_in.detach().to(torch::kCPU, torch::kDouble).flatten(1);
  torch::Tensor y = labels_in.detach().to(torch::kCPU, torch::kLong).reshape({-1});
  const int64_t n = z.size(0), n_train = static_cast<int64_t>(std::floor(train_fraction * static_cast<double>(n)));
  if (y.size(0) != n) throw Error("linear_probe_accuracy: " + std::to_string(y.size(0)) + " labels for " + std::to_string(n) + " rows");
  if (n_train < 2 || n_train >= n) throw Error("linear_probe_accuracy: too few rows to split (" + std::to_string(n) + ")");
  const int64_t classes = y.max().item<int64_t>() + 1;
  torch::Tensor tr = z.slice(0, 0, n_train);
  torch::Tensor mean = tr.mean(0, true), std = tr.std(0, true, true).clamp_min(1e-8);
  auto design = [&](const torch::Tensor& a) {
    return torch::cat({(a - mean) / std, torch::ones({a.size(0), 1}, a.options())}, 1);
  };
  torch::Tensor X = design(tr), Y = torch::one_hot(y.slice(0, 0, n_train), classes).to(torch::kDouble);
  const int64_t d = X.size(1);
  torch::Tensor gram = X.t().mm(X);
  gram = gram + ridge * (gram.trace().item<double>() / static_cast<double>(d)) * torch::eye(d, torch::kDouble);
  torch::Tensor W = torch::linalg::solve(gram, X.t().mm(Y), true);
  torch::Tensor pred = design(z.slice(0, n_train)).mm(W).argmax(1);
  return pred.eq(y.slice(0, n_train)).to(torch::kDouble).mean().item<double>();
}

Straightness flow_straightness(const VectorField& f, const torch::Tensor& x0, const torch::Tensor& grid) {
  const torch::Tensor g = grid.to(torch::kCPU, torch::kDouble).contiguous();
  if (g.dim() != 1 || g.size(0) < 2) throw Error("flow_straightness: needs a 1-D grid of at least two times");
  const double* t = g.data_ptr<double>();
  const double span = t[g.size(0) - 1] - t[0];
  std::vector<torch::Tensor> velocities;
  std::vector<double> weights;
  torch::Tensor x = x0;
  for (int64_t i = 0; i + 1 < g.size(0); ++i) {
    torch::Tensor v = f(x, torch::scalar_tensor(t[i], x0.options()));
    x = x + (t[i + 1] - t[i]) * v;
    velocities.push_back(v.to(torch::kDouble).flatten(1));
    weights.push_back((t[i + 1] - t[i]) / span);
  }
  const torch::Tensor chord = ((x - x0).to(torch::kDouble) / span).flatten(1);
  double gap = 0;
  for (size_t k = 0; k < velocities.size(); ++k)
    gap += weights[k] * (velocities[k] - chord).pow(2).sum(1).mean().item<double>();
  const double scale = chord.pow(2).sum(1).mean().item<double>();
  return {gap, scale > 0 ? gap / scale : 0.0};
}

}  // namespace flowkit::core
