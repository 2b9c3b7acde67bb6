// standard/metrics.h — mode statistics of 2-D samples (the two-sample distances are the
// SDK's: flowkit/sample_metrics.h).
#pragma once
#include <torch/torch.h>

#include <vector>

namespace standard {

struct ModeStats {
  double coverage = 0;   // fraction of modes holding >= min_share / K of the samples
  double precision = 0;  // fraction of samples within `radius` of some mode
};
// Point modes: a sample belongs to mode k when |x - c_k| <= radius (nearest mode first).
ModeStats mode_stats_points(const torch::Tensor& x, const torch::Tensor& centers, double radius, double min_share);
// Ring modes (circles about the origin): distance ||x| - r_k|.
ModeStats mode_stats_rings(const torch::Tensor& x, const std::vector<double>& radii, double radius, double min_share);

}  // namespace standard
