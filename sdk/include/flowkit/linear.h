// flowkit/linear.h — torch::nn::Linear that multiplies a single row as a matrix-vector product.
//
// At batch 1 (a policy call, one sample), LibTorch's linear is a [1, K] x [K, N] matrix product,
// and OpenBLAS's sgemm copies ("packs") the whole weight into its blocked layout on every call:
// for a 256 x 256 layer that copy is ~3/4 of the time. sgemv reads the weight where it lies.
// Same parameters ("weight", "bias"), same results to rounding, any batch size; use it wherever
// torch::nn::Linear would be used. (Call it through flowkit::Linear / as<flowkit::LinearImpl>():
// as<torch::nn::Linear>() would reach the base class's non-virtual forward.)
#pragma once
#include <torch/nn/modules/linear.h>
#include <torch/nn/pimpl.h>

namespace flowkit {

class LinearImpl : public torch::nn::LinearImpl {
 public:
  using torch::nn::LinearImpl::LinearImpl;
  torch::Tensor forward(const torch::Tensor& x) {
    if (x.dim() == 2 && x.size(0) == 1) {
      const torch::Tensor row = x.select(0, 0);
      return (bias.defined() ? torch::addmv(bias, weight, row) : torch::mv(weight, row)).unsqueeze(0);
    }
    return torch::nn::LinearImpl::forward(x);
  }
};
TORCH_MODULE(Linear);

}  // namespace flowkit
