// flowkit/capabilities/noise_kernel.h — a path that exposes its perturbation kernel at a
// noise level sigma (denoising losses draw x = y + noise from it: EDM, PFGM++).
#pragma once
#include <map>
#include <string>
#include <vector>

#include "flowkit/tensor_map.h"

namespace flowkit {

struct NoiseDraw {
  torch::Tensor noise;                   // [n, item_shape...] of the requested dtype/device
  std::map<std::string, double> logs;    // diagnostics of the draw (e.g. a clipped fraction)
};

class NoiseKernel {
 public:
  virtual ~NoiseKernel();
  // n training perturbations at noise levels sigma ([n], float64).
  virtual NoiseDraw training_noise(const torch::Tensor& sigma, const std::vector<int64_t>& item_shape,
                                   torch::Generator& gen, const torch::TensorOptions& options) const = 0;
};

}  // namespace flowkit
