// The N+D perturbation kernel and the path `pfgmpp.kernel`.
#include "pfgmpp/kernel.h"

#include <cmath>
#include <string>

#include "flowkit/error.h"
#include "flowkit/random.h"
#include "shapes.h"

namespace pfgmpp {

using detail::batch_shape;
using detail::numel_of;
using detail::per_row;

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
  torch::Tensor g = flowkit::random::randn({n, N}, gen, dopts);
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

flowkit::NoiseDraw KernelPath::training_noise(const torch::Tensor& sigma, const std::vector<int64_t>& item_shape,
                                              torch::Generator& gen, const torch::TensorOptions& options) const {
  Perturbation p = perturb(o_.D, sigma, sigma.size(0), item_shape, gen, options, o_.beta_clip, o_.clip_lower);
  return {p.noise, {{"clipped_fraction", p.clipped_fraction}}};
}

KernelOptions kernel_options(const flowkit::Config& cfg) {
  KernelOptions o;
  o.D = cfg.get<double>("D");
  o.sigma_min = cfg.get<double>("sigma_min");
  o.sigma_max = cfg.get<double>("sigma_max");
  o.beta_clip = cfg.get<double>("beta_clip");
  o.clip_lower = cfg.get<bool>("clip_lower");
  if (!(o.sigma_min < o.sigma_max))
    cfg.fail("sigma_min", "sigma_min (" + std::to_string(o.sigma_min) + ") must be below sigma_max (" +
                              std::to_string(o.sigma_max) + ")");
  return o;
}

std::unique_ptr<flowkit::Component> make_kernel(const flowkit::Config& cfg, const flowkit::BuildContext&) {
  return std::make_unique<KernelPath>(kernel_options(cfg));
}

}  // namespace pfgmpp
