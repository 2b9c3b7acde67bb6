// The affine path and its schedulers, the MLP model and the CFM loss.
#include <torch/torch.h>

#include <cmath>

#include "flowkit/domain.h"
#include "flowkit/error.h"
#include "flowkit/random.h"
#include "standard/affine_path.h"
#include "standard/cfm_loss.h"
#include "standard/mlp.h"
#include "standard/util.h"

namespace standard {

// ---- schedulers -------------------------------------------------------------------------

SchedulerOutput CondOTScheduler::operator()(const torch::Tensor& t) const {
  return {t, 1 - t, torch::ones_like(t), -torch::ones_like(t)};
}

SchedulerOutput PolynomialScheduler::operator()(const torch::Tensor& t) const {
  torch::Tensor a = t.pow(n_);
  torch::Tensor da = n_ * t.pow(n_ - 1);
  return {a, 1 - a, da, -da};
}

SchedulerOutput VPScheduler::operator()(const torch::Tensor& t) const {
  const double db = beta_max_ - beta_min_;
  torch::Tensor s = 1 - t;
  torch::Tensor T = 0.5 * s * s * db + s * beta_min_;
  torch::Tensor dT = -s * db - beta_min_;
  torch::Tensor alpha = torch::exp(-0.5 * T);
  torch::Tensor e = torch::exp(-T);
  torch::Tensor sigma = torch::sqrt(1 - e);
  return {alpha, sigma, -0.5 * dT * alpha, 0.5 * dT * e / sigma};
}

SchedulerOutput CosineScheduler::operator()(const torch::Tensor& t) const {
  const double h = M_PI / 2;
  torch::Tensor s = torch::sin(h * t), c = torch::cos(h * t);
  return {s, c, h * c, -h * s};
}

std::shared_ptr<const Scheduler> make_scheduler(const std::string& name, double exponent, double beta_min,
                                                double beta_max) {
  if (name == "condot") return std::make_shared<CondOTScheduler>();
  if (name == "polynomial") return std::make_shared<PolynomialScheduler>(exponent);
  if (name == "vp") return std::make_shared<VPScheduler>(beta_min, beta_max);
  if (name == "cosine") return std::make_shared<CosineScheduler>();
  throw flowkit::Error("unknown scheduler '" + name + "' (condot, polynomial, vp, cosine)");
}

// ---- affine path ------------------------------------------------------------------------

torch::Tensor broadcast_time(const torch::Tensor& t, const torch::Tensor& like) {
  torch::Tensor tt = t.to(like.device(), like.scalar_type());
  if (tt.dim() == 0) return tt;
  if (tt.dim() != 1 || (like.dim() > 0 && tt.size(0) != like.size(0) && tt.size(0) != 1))
    throw flowkit::Error("time tensor of shape " + c10::str(tt.sizes()) + " does not match a batch of shape " +
                         c10::str(like.sizes()));
  std::vector<int64_t> shape(static_cast<size_t>(std::max<int64_t>(like.dim(), 1)), 1);
  shape[0] = tt.size(0);
  return tt.reshape(shape);
}

AffinePath::AffinePath(std::shared_ptr<const Scheduler> scheduler) : scheduler_(std::move(scheduler)) {}

SchedulerOutput AffinePath::coefficients(const torch::Tensor& t, const torch::Tensor& like) const {
  return (*scheduler_)(broadcast_time(t, like));
}

flowkit::PathSample AffinePath::sample(const torch::Tensor& x0, const torch::Tensor& x1, const torch::Tensor& t) const {
  if (t.dim() != 1 || t.size(0) != x1.size(0) || x0.sizes() != x1.sizes())
    throw flowkit::Error("affine path: expected x0, x1 of equal shape [B, ...] and t of shape [B]; got " +
                         c10::str(x0.sizes()) + ", " + c10::str(x1.sizes()) + ", " + c10::str(t.sizes()));
  SchedulerOutput c = coefficients(t, x1);
  flowkit::PathSample out;
  out.t = t;
  out.x0 = x0;
  out.x1 = x1;
  out.xt = c.alpha * x1 + c.sigma * x0;
  out.dxt = c.d_alpha * x1 + c.d_sigma * x0;
  return out;
}

torch::Tensor AffinePath::prior(int64_t n, const std::vector<int64_t>& item_shape, torch::Generator& gen,
                                const torch::TensorOptions& options) const {
  std::vector<int64_t> shape{n};
  shape.insert(shape.end(), item_shape.begin(), item_shape.end());
  return flowkit::random::randn(shape, gen, options);
}

torch::Tensor AffinePath::velocity_to_score(const torch::Tensor& v, const torch::Tensor& x,
                                            const torch::Tensor& t) const {
  SchedulerOutput c = coefficients(t, x);
  return (c.alpha * v - c.d_alpha * x) / (c.sigma * (c.d_alpha * c.sigma - c.alpha * c.d_sigma));
}

torch::Tensor AffinePath::target_to_velocity(const torch::Tensor& x1, const torch::Tensor& x,
                                             const torch::Tensor& t) const {
  SchedulerOutput c = coefficients(t, x);
  return (c.d_sigma / c.sigma) * x + (c.d_alpha - c.d_sigma * c.alpha / c.sigma) * x1;
}

torch::Tensor AffinePath::epsilon_to_velocity(const torch::Tensor& eps, const torch::Tensor& x,
                                              const torch::Tensor& t) const {
  SchedulerOutput c = coefficients(t, x);
  return (c.d_alpha / c.alpha) * x + (c.d_sigma - c.d_alpha * c.sigma / c.alpha) * eps;
}

torch::Tensor AffinePath::velocity_to_target(const torch::Tensor& v, const torch::Tensor& x,
                                             const torch::Tensor& t) const {
  SchedulerOutput c = coefficients(t, x);
  return (c.sigma * v - c.d_sigma * x) / (c.sigma * c.d_alpha - c.d_sigma * c.alpha);
}

torch::Tensor AffinePath::velocity_to_epsilon(const torch::Tensor& v, const torch::Tensor& x,
                                              const torch::Tensor& t) const {
  SchedulerOutput c = coefficients(t, x);
  return (c.alpha * v - c.d_alpha * x) / (c.alpha * c.d_sigma - c.d_alpha * c.sigma);
}

torch::Tensor AffinePath::target_to_epsilon(const torch::Tensor& x1, const torch::Tensor& x,
                                            const torch::Tensor& t) const {
  SchedulerOutput c = coefficients(t, x);
  return (x - c.alpha * x1) / c.sigma;
}

torch::Tensor AffinePath::epsilon_to_target(const torch::Tensor& eps, const torch::Tensor& x,
                                            const torch::Tensor& t) const {
  SchedulerOutput c = coefficients(t, x);
  return (x - c.sigma * eps) / c.alpha;
}

std::unique_ptr<flowkit::Component> make_affine_path(const flowkit::Config& cfg, const flowkit::BuildContext&) {
  std::string name = cfg.get<std::string>("scheduler");
  double exponent = cfg.get<double>("exponent");
  double beta_min = cfg.get<double>("beta_min");
  double beta_max = cfg.get<double>("beta_max");
  if (beta_max < beta_min) cfg.fail("beta_max", "must be >= beta_min");
  return std::make_unique<AffinePath>(make_scheduler(name, exponent, beta_min, beta_max));
}

// ---- MLP --------------------------------------------------------------------------------

torch::Tensor sinusoidal_embedding(const torch::Tensor& t, int64_t dim) {
  const int64_t half = dim / 2;
  auto opts = t.options();
  torch::Tensor k = torch::arange(half, opts);
  torch::Tensor freqs = torch::exp(-std::log(10000.0) * k / std::max<int64_t>(half, 1));
  torch::Tensor args = 1000.0 * t.reshape({-1, 1}) * freqs.reshape({1, -1});
  torch::Tensor emb = torch::cat({torch::sin(args), torch::cos(args)}, 1);
  if (dim % 2 == 1) emb = torch::cat({emb, torch::zeros({emb.size(0), 1}, opts)}, 1);
  return emb;
}

MLPNetImpl::MLPNetImpl(const MLPOptions& o) : options_(o) {
  time1_ = register_module("time1", torch::nn::Linear(o.time_embedding_dim, o.hidden));
  time2_ = register_module("time2", torch::nn::Linear(o.hidden, o.hidden));
  input_ = register_module("input", torch::nn::Linear(o.in_dim, o.hidden));
  hidden_ = register_module("hidden", torch::nn::ModuleList());
  for (int64_t i = 1; i < o.layers; ++i) hidden_->push_back(torch::nn::Linear(o.hidden, o.hidden));
  output_ = register_module("output", torch::nn::Linear(o.hidden, o.in_dim));
  if (o.class_conditional)
    label_embedding_ = register_module("label_embedding", torch::nn::Embedding(o.num_classes + 1, o.hidden));
}

torch::Tensor MLPNetImpl::act(const torch::Tensor& h) const {
  const std::string& a = options_.activation;
  if (a == "silu") return torch::silu(h);
  if (a == "relu") return torch::relu(h);
  if (a == "gelu") return torch::gelu(h);
  return torch::tanh(h);
}

torch::Tensor MLPNetImpl::forward(const torch::Tensor& x, const torch::Tensor& t, const torch::Tensor& label) {
  torch::Tensor temb = time2_->forward(act(time1_->forward(sinusoidal_embedding(t, options_.time_embedding_dim))));
  torch::Tensor h = input_->forward(x) + temb;
  if (options_.class_conditional) {
    torch::Tensor l = label.defined() ? label : torch::full({x.size(0)}, options_.num_classes,
                                                              torch::TensorOptions().dtype(torch::kLong).device(x.device()));
    h = h + label_embedding_->forward(l);
  }
  h = act(h);
  for (const auto& layer : *hidden_) h = act(layer->as<torch::nn::Linear>()->forward(h));
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
  return net_->forward(x.reshape({B, -1}), tt.reshape({B}), label).reshape(x.sizes());
}

std::unique_ptr<flowkit::Component> make_mlp(const flowkit::Config& cfg, const flowkit::BuildContext& ctx) {
  MLPOptions o;
  o.hidden = cfg.get<int64_t>("hidden");
  o.layers = cfg.get<int64_t>("layers");
  o.activation = cfg.get<std::string>("activation");
  o.time_embedding_dim = cfg.get<int64_t>("time_embedding_dim");
  o.class_conditional = cfg.get<bool>("class_conditional");
  if (!ctx.domain) cfg.fail("type", "standard.mlp needs a domain (for the input shape), but the pipeline has none");
  std::vector<int64_t> shape = ctx.domain->item_shape();
  if (shape.empty()) cfg.fail("type", "standard.mlp needs a domain with a fixed item shape");
  o.in_dim = 1;
  for (int64_t d : shape) o.in_dim *= d;
  if (o.class_conditional) {
    o.num_classes = ctx.domain->num_classes();
    if (o.num_classes <= 0) cfg.fail("class_conditional", "the domain has no labels (num_classes is 0)");
  }
  return std::make_unique<MLPModel>(o, shape, ctx.device);
}

// ---- CFM loss ---------------------------------------------------------------------------

torch::Tensor sample_times(const CFMOptions& o, int64_t n, torch::Generator& gen, const torch::TensorOptions& opts) {
  if (o.time_sampler == "logit_normal") return torch::sigmoid(o.logit_mean + o.logit_std * flowkit::random::randn({n}, gen, opts));
  return flowkit::random::rand({n}, gen, opts);
}

flowkit::LossOutput CFMLoss::compute(flowkit::Model& model, const flowkit::Path* path, const flowkit::Batch& batch,
                                     torch::Generator& gen) {
  if (!path) throw flowkit::Error("standard.cfm needs a path, but the pipeline has none");
  const torch::Tensor& x1 = batch.at("x");
  const int64_t B = x1.size(0);
  std::vector<int64_t> item(x1.sizes().begin() + 1, x1.sizes().end());
  torch::Tensor x0 = path->prior(B, item, gen, x1.options());
  torch::Tensor t = sample_times(options_, B, gen, x1.options());
  flowkit::PathSample ps = path->sample(x0, x1, t);
  // Every field other than "x" conditions the model (labels, observations, ...).
  flowkit::Conditioning cond;
  for (const auto& name : batch.names())
    if (name != "x") cond.set(name, batch.at(name));
  if (batch.has("label")) {
    torch::Tensor label = batch.at("label").to(torch::kLong);
    if (options_.label_dropout > 0) {
      torch::Tensor drop = flowkit::random::rand({B}, gen, label.options().dtype(torch::kFloat)) < options_.label_dropout;
      label = torch::where(drop, torch::full_like(label, options_.num_classes), label);
    }
    cond.set("label", label);
  }
  torch::Tensor v = model.forward(ps.xt, ps.t, cond);
  flowkit::LossOutput out;
  out.loss = (v - ps.dxt).pow(2).mean();
  out.logs["loss"] = out.loss.item<double>();
  return out;
}

std::unique_ptr<flowkit::Component> make_cfm(const flowkit::Config& cfg, const flowkit::BuildContext& ctx) {
  CFMOptions o;
  o.time_sampler = cfg.get<std::string>("time_sampler");
  o.logit_mean = cfg.get<double>("logit_mean");
  o.logit_std = cfg.get<double>("logit_std");
  o.label_dropout = cfg.get<double>("label_dropout");
  if (!ctx.path) cfg.fail("type", "standard.cfm needs a path, but the pipeline has none");
  o.num_classes = ctx.domain ? ctx.domain->num_classes() : 0;
  if (o.label_dropout > 0 && o.num_classes <= 0)
    cfg.fail("label_dropout", "needs a labelled domain (num_classes > 0)");
  return std::make_unique<CFMLoss>(o);
}

}  // namespace standard
