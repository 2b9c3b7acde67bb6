// The time-conditioned MLP velocity model.
#include <torch/torch.h>

#include <algorithm>
#include <cmath>

#include "flowkit/domain.h"
#include "standard/mlp.h"

namespace standard {

MLPNetImpl::MLPNetImpl(const MLPOptions& o) : options_(o), time_embedding_(o.time_embedding_dim, 1000.0) {
  time1_ = register_module("time1", flowkit::Linear(o.time_embedding_dim, o.hidden));
  time2_ = register_module("time2", flowkit::Linear(o.hidden, o.hidden));
  input_ = register_module("input", flowkit::Linear(o.in_dim, o.hidden));
  hidden_ = register_module("hidden", torch::nn::ModuleList());
  for (int64_t i = 1; i < o.layers; ++i) hidden_->push_back(flowkit::Linear(o.hidden, o.hidden));
  output_ = register_module("output", flowkit::Linear(o.hidden, o.in_dim));
  if (o.class_conditional)
    label_embedding_ = register_module("label_embedding", torch::nn::Embedding(o.num_classes + 1, o.hidden));
  if (o.condition_dim > 0) condition_ = register_module("condition", flowkit::Linear(o.condition_dim, o.hidden));
}

torch::Tensor MLPNetImpl::act(const torch::Tensor& h) const {
  const std::string& a = options_.activation;
  if (a == "silu") return torch::silu(h);
  if (a == "relu") return torch::relu(h);
  if (a == "gelu") return torch::gelu(h);
  return torch::tanh(h);
}

torch::Tensor MLPNetImpl::forward(const torch::Tensor& x, const torch::Tensor& t, const torch::Tensor& label,
                                  const torch::Tensor& condition) {
  torch::Tensor temb = time2_->forward(act(time1_->forward(time_embedding_(t))));
  torch::Tensor h = input_->forward(x) + temb;
  if (options_.class_conditional) {
    torch::Tensor l = label.defined() ? label : torch::full({x.size(0)}, options_.num_classes,
                                                              torch::TensorOptions().dtype(torch::kLong).device(x.device()));
    h = h + label_embedding_->forward(l);
  }
  if (options_.condition_dim > 0 && condition.defined()) h = h + condition_->forward(condition);
  h = act(h);
  for (const auto& layer : *hidden_) h = act(layer->as<flowkit::Linear>()->forward(h));
  return output_->forward(h);
}

MLPModel::MLPModel(const MLPOptions& options, std::vector<int64_t> item_shape, const std::string& device)
    : net_(options), item_shape_(std::move(item_shape)) {
  net_->to(torch::Device(device));
}

torch::Tensor MLPModel::forward(const torch::Tensor& x, const torch::Tensor& t, const flowkit::Conditioning& cond) {
  const int64_t B = x.size(0);
  torch::Tensor tt = t.to(x.device(), x.scalar_type());
  if (tt.dim() == 0) tt = tt.expand({B});
  torch::Tensor label;
  if (net_->options().class_conditional && cond.has("label"))
    label = cond.at("label").to(x.device(), torch::kLong).reshape({B});
  torch::Tensor condition;
  if (net_->options().condition_dim > 0 && cond.has("condition"))
    condition = cond.at("condition").to(x.device(), x.scalar_type()).reshape({B, -1});
  return net_->forward(x.reshape({B, -1}), tt.reshape({B}), label, condition).reshape(x.sizes());
}

MLPOptions mlp_options(const flowkit::Config& cfg) {
  MLPOptions o;
  o.hidden = cfg.get<int64_t>("hidden");
  o.layers = cfg.get<int64_t>("layers");
  o.activation = cfg.get<std::string>("activation");
  o.time_embedding_dim = cfg.get<int64_t>("time_embedding_dim");
  o.class_conditional = cfg.get<bool>("class_conditional");
  return o;
}

std::unique_ptr<flowkit::Component> make_mlp(const flowkit::Config& cfg, const flowkit::BuildContext& ctx) {
  MLPOptions o = mlp_options(cfg);
  if (!ctx.domain) cfg.fail("type", "standard.mlp needs a domain (for the input shape), but the pipeline has none");
  std::vector<int64_t> shape = ctx.domain->item_shape();
  if (shape.empty()) cfg.fail("type", "standard.mlp needs a domain with a fixed item shape");
  o.in_dim = 1;
  for (int64_t d : shape) o.in_dim *= d;
  if (o.class_conditional) {
    o.num_classes = ctx.domain->num_classes();
    if (o.num_classes <= 0) cfg.fail("class_conditional", "the domain has no labels (num_classes is 0)");
  }
  const auto conds = ctx.domain->condition_shapes();
  if (auto c = conds.find("condition"); c != conds.end()) {
    o.condition_dim = 1;
    for (int64_t d : c->second) o.condition_dim *= d;
  }
  return std::make_unique<MLPModel>(o, shape, ctx.device);
}

}  // namespace standard
