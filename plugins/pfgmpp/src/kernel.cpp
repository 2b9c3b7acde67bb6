// The N+D perturbation kernel, the kernel path, EDM preconditioning and the EDM loss.
#include <torch/torch.h>

#include <cmath>

#include "flowkit/error.h"
#include "pfgmpp/pfgmpp.h"

namespace pfgmpp {

namespace {
int64_t numel_of(const std::vector<int64_t>& shape) {
  int64_t n = 1;
  for (int64_t s : shape) n *= s;
  return n;
}
std::vector<int64_t> batch_shape(int64_t n, const std::vector<int64_t>& item) {
  std::vector<int64_t> s{n};
  s.insert(s.end(), item.begin(), item.end());
  return s;
}
// [B] -> [B, 1, ...] to broadcast against `like`; 0-dim stays.
torch::Tensor per_row(const torch::Tensor& v, const torch::Tensor& like) {
  torch::Tensor t = v.to(like.device(), like.scalar_type());
  if (t.dim() == 0) return t;
  std::vector<int64_t> shape(static_cast<size_t>(std::max<int64_t>(like.dim(), 1)), 1);
  shape[0] = t.size(0);
  return t.reshape(shape);
}
}  // namespace

torch::Tensor gamma_draws(double alpha, int64_t n, torch::Generator& gen, const torch::Device& device) {
  auto opts = torch::TensorOptions().dtype(torch::kDouble).device(gen.device());
  return at::_standard_gamma(torch::full({n}, alpha, opts), gen).to(device);
}

Perturbation perturb(double D, const torch::Tensor& sigma, int64_t n, const std::vector<int64_t>& item_shape,
                     torch::Generator& gen, const torch::TensorOptions& options, double clip, bool clip_lower) {
  const int64_t N = numel_of(item_shape);
  auto dopts = torch::TensorOptions().dtype(torch::kDouble).device(gen.device());
  torch::Tensor s = sigma.to(torch::kDouble).to(gen.device());
  if (s.dim() == 0) s = s.expand({n});
  Perturbation out;
  torch::Tensor g = torch::randn({n, N}, gen, dopts);
  if (std::isinf(D)) {
    torch::Tensor noise = g * s.unsqueeze(1);
    out.radius = noise.norm(2, 1).to(options.device());
    out.noise = noise.reshape(batch_shape(n, item_shape)).to(options);
    return out;
  }
  torch::Tensor g1 = gamma_draws(N / 2.0, n, gen, gen.device());
  torch::Tensor g2 = gamma_draws(D / 2.0, n, gen, gen.device());
  torch::Tensor ratio;  // B / (1 - B) = G1 / G2
  if (clip > 0) {
    torch::Tensor b = g1 / (g1 + g2);
    torch::Tensor lo = clip_lower ? torch::full_like(b, clip) : torch::zeros_like(b);
    torch::Tensor bc = torch::minimum(torch::maximum(b, lo), torch::full_like(b, 1 - clip));
    out.clipped_fraction = (bc != b).to(torch::kDouble).mean().item<double>();
    ratio = bc / (1 - bc);
  } else {
    ratio = g1 / g2;
  }
  torch::Tensor radius = s * torch::sqrt(D * ratio);
  torch::Tensor u = g / g.norm(2, 1, true).clamp_min(1e-300);
  out.radius = radius.to(options.device());
  out.noise = (u * radius.unsqueeze(1)).reshape(batch_shape(n, item_shape)).to(options);
  return out;
}

// ---- path ----------------------------------------------------------------------------------

torch::Tensor KernelPath::sigma_of_t(const torch::Tensor& t) const {
  return torch::exp((1 - t) * std::log(o_.sigma_max) + t * std::log(o_.sigma_min));
}

flowkit::PathSample KernelPath::sample(const torch::Tensor& x0, const torch::Tensor& x1, const torch::Tensor& t) const {
  if (t.dim() != 1 || t.size(0) != x1.size(0) || x0.sizes() != x1.sizes())
    throw flowkit::Error("pfgmpp.kernel: expected x0, x1 of equal shape [B, ...] and t of shape [B]; got " +
                         c10::str(x0.sizes()) + ", " + c10::str(x1.sizes()) + ", " + c10::str(t.sizes()));
  torch::Tensor sigma = sigma_of_t(t);
  torch::Tensor dsigma = sigma * std::log(o_.sigma_min / o_.sigma_max);
  flowkit::PathSample out;
  out.t = t;
  out.x0 = x0;
  out.x1 = x1;
  out.xt = x1 + per_row(sigma, x1) * x0;
  out.dxt = per_row(dsigma, x1) * x0;
  out.extras.set("sigma", sigma);
  return out;
}

torch::Tensor KernelPath::prior(int64_t n, const std::vector<int64_t>& item_shape, torch::Generator& gen,
                                const torch::TensorOptions& options) const {
  return perturb(o_.D, torch::ones({}, torch::kDouble), n, item_shape, gen, options, 0.0).noise;
}

Perturbation KernelPath::training_noise(const torch::Tensor& sigma, const std::vector<int64_t>& item_shape,
                                        torch::Generator& gen, const torch::TensorOptions& options) const {
  return perturb(o_.D, sigma, sigma.size(0), item_shape, gen, options, o_.beta_clip, o_.clip_lower);
}

// ---- preconditioning ---------------------------------------------------------------------

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

// ---- loss ----------------------------------------------------------------------------------

flowkit::LossOutput EdmLoss::compute(flowkit::Model& model, const flowkit::Path* path, const flowkit::Batch& batch,
                                     torch::Generator& gen) {
  const torch::Tensor& y = batch.at("x");
  const int64_t n = y.size(0);
  std::vector<int64_t> item(y.sizes().begin() + 1, y.sizes().end());
  auto dopts = torch::TensorOptions().dtype(torch::kDouble).device(gen.device());
  torch::Tensor sigma = torch::exp(o_.p_mean + o_.p_std * torch::randn({n}, gen, dopts));
  Perturbation p;
  if (const auto* kernel = dynamic_cast<const KernelPath*>(path)) p = kernel->training_noise(sigma, item, gen, y.options());
  else p = perturb(kInf, sigma, n, item, gen, y.options());
  flowkit::Conditioning cond;
  for (const auto& name : batch.names())
    if (name != "x") cond.set(name, batch.at(name));
  torch::Tensor s = sigma.to(y.device(), y.scalar_type());
  torch::Tensor denoised = model.forward(y + p.noise, s, cond);
  const double sd = o_.sigma_data;
  torch::Tensor weight = (s * s + sd * sd) / (s * sd).pow(2);
  torch::Tensor per_item = (denoised - y).pow(2).reshape({n, -1}).sum(1);
  flowkit::LossOutput out;
  out.loss = (weight * per_item).mean();
  out.logs["clipped_fraction"] = p.clipped_fraction;
  out.logs["sigma_mean"] = sigma.mean().item<double>();
  return out;
}

}  // namespace pfgmpp
