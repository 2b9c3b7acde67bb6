// The loss `pfgmpp.edm_loss`.
#include "pfgmpp/edm_loss.h"

#include "flowkit/capabilities/noise_kernel.h"
#include "flowkit/capability.h"
#include "flowkit/error.h"
#include "flowkit/model.h"
#include "flowkit/path.h"
#include "flowkit/random.h"
#include "pfgmpp/kernel.h"

namespace pfgmpp {

namespace {
const char* const kNeedsKernel =
    "a path with a noise kernel (flowkit::NoiseKernel, e.g. pfgmpp.kernel), or no path for the Gaussian (EDM) "
    "kernel";
}  // namespace

flowkit::LossOutput EdmLoss::compute(flowkit::Model& model, const flowkit::Path* path, const flowkit::Batch& batch,
                                     torch::Generator& gen) {
  const flowkit::NoiseKernel* kernel =
      path ? &flowkit::require_capability<flowkit::NoiseKernel>(path, "pfgmpp.edm_loss", kNeedsKernel) : nullptr;
  const torch::Tensor& y = batch.at("x");
  const int64_t n = y.size(0);
  std::vector<int64_t> item(y.sizes().begin() + 1, y.sizes().end());
  auto dopts = torch::TensorOptions().dtype(torch::kDouble).device(gen.device());
  torch::Tensor sigma = torch::exp(o_.p_mean + o_.p_std * flowkit::random::randn({n}, gen, dopts));
  flowkit::NoiseDraw draw;
  if (kernel) {
    draw = kernel->training_noise(sigma, item, gen, y.options());
  } else {
    draw.noise = perturb(kInf, sigma, n, item, gen, y.options()).noise;
    draw.logs["clipped_fraction"] = 0.0;
  }
  const flowkit::Conditioning cond = batch.without({"x"});
  torch::Tensor s = sigma.to(y.device(), y.scalar_type());
  torch::Tensor denoised = model.forward(y + draw.noise, s, cond);
  const double sd = o_.sigma_data;
  torch::Tensor weight = (s * s + sd * sd) / (s * sd).pow(2);
  torch::Tensor per_item = (denoised - y).pow(2).reshape({n, -1}).sum(1);
  flowkit::LossOutput out;
  out.loss = (weight * per_item).mean();
  out.logs = draw.logs;
  out.logs["sigma_mean"] = sigma.mean().item<double>();
  return out;
}

EdmLossOptions edm_loss_options(const flowkit::Config& cfg) {
  EdmLossOptions o;
  o.p_mean = cfg.get<double>("P_mean");
  o.p_std = cfg.get<double>("P_std");
  o.sigma_data = cfg.get<double>("sigma_data");
  return o;
}

std::unique_ptr<flowkit::Component> make_edm_loss(const flowkit::Config& cfg, const flowkit::BuildContext& ctx) {
  EdmLossOptions o = edm_loss_options(cfg);
  // The same check as compute(), before any training starts.
  if (ctx.path && !flowkit::capability<flowkit::NoiseKernel>(ctx.path))
    cfg.fail("type", std::string("pfgmpp.edm_loss needs ") + kNeedsKernel + "; the pipeline's path has none");
  return std::make_unique<EdmLoss>(o);
}

}  // namespace pfgmpp
