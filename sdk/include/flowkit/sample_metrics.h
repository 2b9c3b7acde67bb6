// flowkit/sample_metrics.h — two-sample distances between sample sets x [N, ...] and
// y [M, ...] (items flattened, computed in float64 on the CPU). One estimator each, used by
// every domain that reports them.
#pragma once
#include <torch/types.h>

#include <vector>

namespace flowkit::metrics {

// Energy distance 2 E|X-Y| - E|X-X'| - E|Y-Y'| (Euclidean), the unbiased U-statistic:
// within-sample means exclude the i == j pairs. Not square-rooted; about 0 (either sign)
// for equal distributions. Needs N, M >= 2.
double energy_distance(const torch::Tensor& x, const torch::Tensor& y);

// Squared MMD, unbiased estimator, kernel k(a, b) = mean_k exp(-|a-b|^2 / (2 (m_k h)^2)) with
// h the median pairwise distance of the pooled sample (median heuristic, on at most 1000
// pooled points) and m_k the `multipliers`. Needs N, M >= 2.
double mmd_rbf(const torch::Tensor& x, const torch::Tensor& y,
               const std::vector<double>& multipliers = {0.25, 0.5, 1.0, 2.0, 4.0});

// Squared sliced Wasserstein-2: mean over `projections` random unit directions (from gen) of
// the 1-D W2^2 between the projections, by sorted matching; when N != M both are compared at
// min(N, M) quantile levels (k + 1/2)/K with linear interpolation.
double sliced_w2(const torch::Tensor& x, const torch::Tensor& y, int64_t projections, torch::Generator& gen);

// Squared exact Wasserstein-2 between the two empirical measures with equal sample sizes
// (N == M): the optimal assignment (Hungarian algorithm, O(N^3); N <= 2000) of squared
// Euclidean costs, averaged.
double exact_w2(const torch::Tensor& x, const torch::Tensor& y);

}  // namespace flowkit::metrics
