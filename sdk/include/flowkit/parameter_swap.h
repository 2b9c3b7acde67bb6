// flowkit/parameter_swap.h — put other values into a module's parameters for a scope (EMA
// weights for sampling, quantised weights for a test) and restore them afterwards.
#pragma once
#include <torch/nn/module.h>

#include <vector>

namespace flowkit {

class ScopedParameterSwap {
 public:
  // `values` in the order of module.parameters(); an empty vector swaps nothing.
  ScopedParameterSwap(torch::nn::Module& module, const std::vector<torch::Tensor>& values);
  ~ScopedParameterSwap();
  ScopedParameterSwap(const ScopedParameterSwap&) = delete;
  ScopedParameterSwap& operator=(const ScopedParameterSwap&) = delete;

 private:
  torch::nn::Module& module_;
  std::vector<torch::Tensor> saved_;
};

}  // namespace flowkit
