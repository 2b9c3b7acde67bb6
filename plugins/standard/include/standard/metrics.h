// standard/metrics.h — two-sample metrics between sample sets x [N, D] and y [M, D]
// (any shape with a leading batch dimension; items are flattened). All in float64.
#pragma once
#include <torch/torch.h>

#include <vector>

namespace standard {

// Energy distance 2 E|X-Y| - E|X-X'| - E|Y-Y'| (Euclidean norms), the unbiased
// (U-statistic) form: within-sample means exclude the i == j pairs. Not square-rooted; about
// 0 (either sign) for equal distributions. Needs N, M >= 2.
double energy_distance(const torch::Tensor& x, const torch::Tensor& y);

// Squared MMD, unbiased estimator, with the kernel k(a, b) = mean_k exp(-|a-b|^2 / (2 (m_k h)^2))
// where h is the median pairwise distance of the pooled sample (median heuristic; on at most
// 1000 pooled points) and m_k are `multipliers` (default 0.25, 0.5, 1, 2, 4).
double mmd_rbf(const torch::Tensor& x, const torch::Tensor& y,
               const std::vector<double>& multipliers = {0.25, 0.5, 1.0, 2.0, 4.0});

// Squared sliced Wasserstein-2: mean over `projections` random unit directions u (from gen)
// of W2^2 between the 1-D projections, by matching sorted samples; when N != M, both are
// compared at min(N, M) quantile levels (k + 1/2)/K with linear interpolation.
double sliced_w2(const torch::Tensor& x, const torch::Tensor& y, int64_t projections, torch::Generator& gen);

struct ModeStats {
  double coverage = 0;   // fraction of modes holding >= min_share / K of the samples
  double precision = 0;  // fraction of samples within `radius` of some mode
};
// Point modes: a sample belongs to mode k when |x - c_k| <= radius (nearest mode first).
ModeStats mode_stats_points(const torch::Tensor& x, const torch::Tensor& centers, double radius, double min_share);
// Ring modes (circles about the origin): distance ||x| - r_k|.
ModeStats mode_stats_rings(const torch::Tensor& x, const std::vector<double>& radii, double radius, double min_share);

}  // namespace standard
