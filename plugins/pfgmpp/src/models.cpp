// The models: EDM preconditioning, the residual MLP and the training-free exact denoiser.
#include "pfgmpp/models.h"

#include <cmath>
#include <string>

#include "flowkit/domain.h"
#include "flowkit/error.h"
#include "flowkit/kinds.h"
#include "shapes.h"

namespace pfgmpp {

using detail::per_row;

// ---- EDM preconditioning -------------------------------------------------------------------

Precond edm_precond(const torch::Tensor& sigma, double sd) {
  torch::Tensor s2 = sigma * sigma + sd * sd;
  return {sd * sd / s2, sigma * sd / torch::sqrt(s2), 1 / torch::sqrt(s2), torch::log(sigma) / 4};
}

EdmModel::EdmModel(std::unique_ptr<flowkit::Model> inner, double sigma_data)
    : inner_(std::move(inner)), holder_(std::make_shared<torch::nn::Module>("EdmPrecond")), sigma_data_(sigma_data) {
  // Non-owning alias: the inner model owns its module and lives as long as this wrapper.
  holder_->register_module("net", std::shared_ptr<torch::nn::Module>(std::shared_ptr<void>(), &inner_->module()));
}

torch::Tensor EdmModel::forward(const torch::Tensor& x, const torch::Tensor& t, const flowkit::Conditioning& cond) {
  torch::Tensor sigma = t.to(x.device(), x.scalar_type()).clamp_min(1e-20);
  if (sigma.dim() == 0) sigma = sigma.expand({x.size(0)});
  Precond c = edm_precond(sigma, sigma_data_);
  torch::Tensor F = inner_->forward(per_row(c.c_in, x) * x, c.c_noise, cond);
  return per_row(c.c_skip, x) * x + per_row(c.c_out, x) * F;
}

// ---- residual MLP --------------------------------------------------------------------------

ResMLPImpl::ResMLPImpl(const ResMLPOptions& o) : o_(o) {
  const int64_t half = o.embedding_dim / 2;
  // Geometric frequencies in [1/2, 64]: c_noise = ln(sigma)/4 spans about [-3, 1.5].
  freqs_ = register_buffer("freqs", torch::exp(torch::linspace(std::log(0.5), std::log(64.0), half)));
  embed1_ = register_module("embed1", flowkit::Linear(2 * half, o.hidden));
  embed2_ = register_module("embed2", flowkit::Linear(o.hidden, o.hidden));
  input_ = register_module("input", flowkit::Linear(o.in_dim, o.hidden));
  norms_ = register_module("norms", torch::nn::ModuleList());
  fc1_ = register_module("fc1", torch::nn::ModuleList());
  fc2_ = register_module("fc2", torch::nn::ModuleList());
  temb_ = register_module("affine", torch::nn::ModuleList());
  for (int64_t i = 0; i < o.blocks; ++i) {
    norms_->push_back(torch::nn::LayerNorm(torch::nn::LayerNormOptions({o.hidden})));
    fc1_->push_back(flowkit::Linear(o.hidden, 2 * o.hidden));
    temb_->push_back(flowkit::Linear(o.hidden, 2 * o.hidden));
    fc2_->push_back(flowkit::Linear(2 * o.hidden, o.hidden));
  }
  out_norm_ = register_module("out_norm", torch::nn::LayerNorm(torch::nn::LayerNormOptions({o.hidden})));
  output_ = register_module("output", flowkit::Linear(o.hidden, o.in_dim));
  if (o.class_conditional)
    label_embed_ = register_module("label_embed", torch::nn::Embedding(o.num_classes + 1, o.hidden));
}

torch::Tensor ResMLPImpl::forward(const torch::Tensor& x, const torch::Tensor& t, const torch::Tensor& label) {
  torch::Tensor tt = t.to(x.scalar_type());
  if (tt.dim() == 0) tt = tt.expand({x.size(0)});
  torch::Tensor arg = tt.unsqueeze(1) * freqs_.to(x.scalar_type()).unsqueeze(0);
  torch::Tensor e = torch::cat({torch::sin(arg), torch::cos(arg)}, 1);
  e = embed2_(torch::silu(embed1_(e)));
  if (o_.class_conditional) {
    torch::Tensor l = label.defined() ? label.to(torch::kLong) : torch::full({x.size(0)}, o_.num_classes, torch::dtype(torch::kLong).device(x.device()));
    e = e + label_embed_(l);
  }
  e = torch::silu(e);
  torch::Tensor h = input_(x);
  for (int64_t i = 0; i < o_.blocks; ++i) {
    torch::Tensor z = fc1_[i]->as<flowkit::Linear>()->forward(norms_[i]->as<torch::nn::LayerNorm>()->forward(h));
    z = z + temb_[i]->as<flowkit::Linear>()->forward(e);
    h = h + fc2_[i]->as<flowkit::Linear>()->forward(torch::silu(z));
  }
  return output_(torch::silu(out_norm_(h)));
}

ResMLPModel::ResMLPModel(const ResMLPOptions& o, std::vector<int64_t> item_shape)
    : net_(o), item_shape_(std::move(item_shape)) {}

torch::Tensor ResMLPModel::forward(const torch::Tensor& x, const torch::Tensor& t, const flowkit::Conditioning& cond) {
  torch::Tensor label = cond.has("label") ? cond.at("label") : torch::Tensor();
  return net_->forward(x.reshape({x.size(0), -1}), t, label).reshape(x.sizes());
}

// ---- exact denoiser ------------------------------------------------------------------------

torch::Tensor exact_denoiser(const torch::Tensor& x, const torch::Tensor& sigma, const torch::Tensor& data, double D) {
  const int64_t B = x.size(0), M = data.size(0);
  torch::Tensor xf = x.reshape({B, -1}).to(torch::kDouble);
  torch::Tensor y = data.reshape({M, -1}).to(x.device(), torch::kDouble);
  const double N = static_cast<double>(xf.size(1));
  torch::Tensor s = sigma.to(x.device(), torch::kDouble);
  if (s.dim() == 0) s = s.expand({B});
  s = s.unsqueeze(1);
  torch::Tensor d2 = (xf.pow(2).sum(1, true) - 2 * xf.matmul(y.t()) + y.pow(2).sum(1).unsqueeze(0)).clamp_min(0);
  torch::Tensor logw = std::isinf(D) ? -d2 / (2 * s * s) : -(N + D) / 2 * torch::log((d2 + s * s * D).clamp_min(1e-300));
  torch::Tensor w = torch::softmax(logw, 1);
  return w.matmul(y).reshape(x.sizes()).to(x.scalar_type());
}

ExactDenoiser::ExactDenoiser(torch::Tensor data, double D)
    : data_(std::move(data)), D_(D), module_(std::make_shared<torch::nn::Module>("ExactDenoiser")) {
  scale_ = module_->register_parameter("scale", torch::ones({1}));
}

torch::Tensor ExactDenoiser::forward(const torch::Tensor& x, const torch::Tensor& t, const flowkit::Conditioning&) {
  // `scale` (fixed at 1) only gives the contract's gradient check something to reach.
  return exact_denoiser(x, t.clamp_min(1e-20), data_, D_) * scale_.to(x.scalar_type());
}

// ---- factories -----------------------------------------------------------------------------

namespace {
flowkit::Domain& need_domain(const flowkit::Config& cfg, const flowkit::BuildContext& ctx, const std::string& what) {
  if (!ctx.domain) cfg.fail("type", what + " needs a domain in the pipeline");
  return *ctx.domain;
}
}  // namespace

std::unique_ptr<flowkit::Component> make_edm(const flowkit::Config& cfg, const flowkit::BuildContext& ctx) {
  const double sigma_data = cfg.get<double>("sigma_data");
  const flowkit::Config net = cfg.child("net");
  if (!ctx.build) cfg.fail("net", "the host gave no way to build the inner model");
  std::unique_ptr<flowkit::Component> c = ctx.build(flowkit::Kind::model, net);
  if (!c || !flowkit::implements_interface(flowkit::Kind::model, *c)) cfg.fail("net", "the inner component is not a model");
  std::unique_ptr<flowkit::Model> inner(static_cast<flowkit::Model*>(c.release()));
  return std::make_unique<EdmModel>(std::move(inner), sigma_data);
}

ResMLPOptions resmlp_options(const flowkit::Config& cfg) {
  ResMLPOptions o;
  o.hidden = cfg.get<int64_t>("hidden");
  o.blocks = cfg.get<int64_t>("blocks");
  o.embedding_dim = cfg.get<int64_t>("embedding_dim");
  o.class_conditional = cfg.get<bool>("class_conditional");
  return o;
}

std::unique_ptr<flowkit::Component> make_resmlp(const flowkit::Config& cfg, const flowkit::BuildContext& ctx) {
  ResMLPOptions o = resmlp_options(cfg);
  const flowkit::Domain& domain = need_domain(cfg, ctx, "pfgmpp.resmlp (it reads the data shape)");
  std::vector<int64_t> item = domain.item_shape();
  if (item.empty()) cfg.fail("type", "pfgmpp.resmlp needs a domain with a fixed item shape");
  o.in_dim = 1;
  for (int64_t s : item) o.in_dim *= s;
  o.num_classes = domain.num_classes();
  if (o.class_conditional && o.num_classes <= 0) cfg.fail("class_conditional", "the domain has no classes");
  auto m = std::make_unique<ResMLPModel>(o, item);
  m->module().to(torch::Device(ctx.device));
  return m;
}

std::unique_ptr<flowkit::Component> make_exact_denoiser(const flowkit::Config& cfg, const flowkit::BuildContext& ctx) {
  const double D = cfg.get<double>("D");
  const int64_t points = cfg.get<int64_t>("points");
  const int64_t seed = cfg.get<int64_t>("seed");
  flowkit::Domain& domain = need_domain(cfg, ctx, "pfgmpp.exact_denoiser (its training points)");
  auto gen = at::detail::createCPUGenerator(static_cast<uint64_t>(seed));
  torch::Tensor data = domain.train_batch(points, gen).at("x");
  return std::make_unique<ExactDenoiser>(data.to(torch::Device(ctx.device)), D);
}

}  // namespace pfgmpp
