// standard/mlp.h — a time-conditioned (optionally class-conditioned) MLP velocity model.
#pragma once
#include <torch/torch.h>

#include <memory>
#include <string>

#include "flowkit/config.h"
#include "flowkit/linear.h"
#include "flowkit/model.h"
#include "flowkit/registry.h"
#include "flowkit/time_embedding.h"

namespace standard {

// The parameters of `standard.mlp` (defaults and ranges: plugin.json) and the two sizes
// the factory takes from the domain.
struct MLPOptions {
  int64_t in_dim = 0;          // from the domain: product of its item shape
  int64_t hidden = 0;
  int64_t layers = 0;          // number of hidden layers (each `hidden` wide)
  int64_t time_embedding_dim = 0;
  std::string activation;      // silu | relu | gelu | tanh
  bool class_conditional = false;
  int64_t num_classes = 0;     // from the domain: labels 0..num_classes-1; index num_classes is the null class
  int64_t condition_dim = 0;   // from the domain: width of its continuous cond "condition" (0: none)
};
// Reads every key of a resolved config (in_dim and num_classes stay 0).
MLPOptions mlp_options(const flowkit::Config& cfg);

// h1 = act(W_in x + T(t) [+ E(label)]), h_{k+1} = act(W_k h_k), out = W_out h_L, where
// T = Linear(sinusoidal(t), scale 1000: t in [0, 1] spans the range of integer steps) -> act
// -> Linear (flowkit/time_embedding.h), E is an embedding with a null class, and, when the
// domain provides a continuous cond "condition" [B, c], a linear map of it is added too.
class MLPNetImpl : public torch::nn::Module {
 public:
  explicit MLPNetImpl(const MLPOptions& options);
  // x: [B, in_dim]; t: [B]; label: [B] int64 or undefined (-> null class); condition: [B, c]
  // or undefined (-> zeros).
  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& t, const torch::Tensor& label,
                        const torch::Tensor& condition = {});
  const MLPOptions& options() const { return options_; }

 private:
  torch::Tensor act(const torch::Tensor& h) const;
  MLPOptions options_;
  flowkit::Linear time1_{nullptr}, time2_{nullptr}, input_{nullptr}, output_{nullptr};
  torch::nn::ModuleList hidden_{nullptr};
  torch::nn::Embedding label_embedding_{nullptr};
  flowkit::Linear condition_{nullptr};
  flowkit::SinusoidalTimeEmbedding time_embedding_;  // not a buffer: checkpoints stay as they are
};
TORCH_MODULE(MLPNet);

class MLPModel : public flowkit::Model {
 public:
  MLPModel(const MLPOptions& options, std::vector<int64_t> item_shape, const std::string& device);
  // x: [B, ...item_shape]; t: [B] or 0-dim; uses cond "label" when class_conditional.
  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& t, const flowkit::Conditioning& cond) override;
  torch::nn::Module& module() override { return *net_; }
  MLPNet& net() { return net_; }

 private:
  MLPNet net_;
  std::vector<int64_t> item_shape_;
};

// Factory of `standard.mlp`: params hidden, layers, activation, time_embedding_dim,
// class_conditional. Needs ctx.domain (input shape, number of classes).
std::unique_ptr<flowkit::Component> make_mlp(const flowkit::Config& cfg, const flowkit::BuildContext& ctx);

}  // namespace standard
