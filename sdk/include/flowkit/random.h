// flowkit/random.h — random draws from an explicit generator, made on the generator's own
// device and then moved to the requested one (a CPU generator can feed CUDA tensors, and a
// run stays a pure function of its seed whatever the device).
#pragma once
#include <torch/types.h>

namespace flowkit::random {

torch::Tensor randn(torch::IntArrayRef size, torch::Generator& gen, const torch::TensorOptions& options = {});
torch::Tensor rand(torch::IntArrayRef size, torch::Generator& gen, const torch::TensorOptions& options = {});
// Integers in [low, high).
torch::Tensor randint(int64_t low, int64_t high, torch::IntArrayRef size, torch::Generator& gen,
                      const torch::TensorOptions& options = torch::TensorOptions().dtype(torch::kLong));
// A permutation of 0..n-1 (int64) on options' device.
torch::Tensor randperm(int64_t n, torch::Generator& gen, const torch::TensorOptions& options = torch::TensorOptions().dtype(torch::kLong));

}  // namespace flowkit::random
