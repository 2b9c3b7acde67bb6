// AdamW over all trainable parameters at once. The parameters and their gradients become views
// into one flat buffer per dtype and device, so that an optimizer step, zeroing, the gradient
// norm and the EMA are a few tensor operations instead of several per parameter tensor (the
// per-tensor loop was most of the framework's per-step cost at small batch sizes). The update is
// torch::optim::AdamW's, operation for operation.
#pragma once
#include "flowkit/tensor_file.h"
#include <torch/torch.h>

#include <vector>

namespace flowkit::core {

struct AdamWSettings {
  double lr = 1e-3, beta1 = 0.9, beta2 = 0.999, weight_decay = 0.0, eps = 1e-8;
};

class FlatAdamW {
 public:
  // `params`: module().parameters(); those that require grad are flattened and optimised.
  FlatAdamW(const std::vector<torch::Tensor>& params, const AdamWSettings& settings);
  void set_lr(double lr) { settings_.lr = lr; }
  void zero_grad();
  // Scales the gradients so that their global 2-norm is at most max_norm; returns the norm
  // before scaling (as torch::nn::utils::clip_grad_norm_).
  double clip_grad_norm(double max_norm);
  void step();
  // The one flat buffer holding every parameter in module order, or undefined when the
  // parameters are not all in one buffer (several dtypes/devices, or frozen ones).
  const torch::Tensor& all_parameters() const { return all_; }
  // A distributed run: the flat gradient buffers (for the all-reduce), the moment buffers and
  // the step count (given by rank 0 to every rank at the start).
  std::vector<torch::Tensor> gradients();
  std::vector<torch::Tensor> moments() const;
  int64_t steps_taken() const { return step_; }
  void set_steps_taken(int64_t steps) { step_ = steps; }
  // The state as named tensors ("<prefix>step", "<prefix>exp_avg_<i>", ...), in a checkpoint.
  void save(io::TensorDict& tensors, const std::string& prefix) const;
  void load(const io::TensorDict& tensors, const std::string& prefix);

 private:
  struct Group {
    std::vector<torch::Tensor> params;  // the parameters, now views of `param`
    std::vector<int64_t> offsets;
    torch::Tensor param, grad, exp_avg, exp_avg_sq;
  };
  // Puts gradients that autograd replaced (create_graph) back into the flat buffer.
  void gather_grads();
  AdamWSettings settings_;
  std::vector<Group> groups_;
  int64_t step_ = 0;
  torch::Tensor all_;
};

}  // namespace flowkit::core
