// pfgmpp/edm_loss.h — the loss `pfgmpp.edm_loss`: EDM's denoising loss with the pipeline path's
// noise kernel.
#pragma once
#include <torch/torch.h>

#include <memory>

#include "flowkit/config.h"
#include "flowkit/loss.h"
#include "flowkit/registry.h"

namespace pfgmpp {

// The parameters of `pfgmpp.edm_loss` (defaults and ranges: plugin.json).
struct EdmLossOptions {
  double p_mean = 0, p_std = 0, sigma_data = 0;
};
EdmLossOptions edm_loss_options(const flowkit::Config& cfg);

// sigma = exp(P_mean + P_std xi); x = y + n with n the training perturbation of the path's noise
// kernel (flowkit::NoiseKernel, e.g. pfgmpp.kernel); with no path in the pipeline, the Gaussian
// (EDM) kernel n = sigma N(0, I), i.e. D = inf. A path without a noise kernel is an error (its
// t-parametrised sample() is not the perturbation the loss needs). loss = mean over the batch
// of the sum over the item of lambda(sigma) (D(x, sigma) - y)^2, lambda = (s^2+s_d^2)/(s s_d)^2.
// Logs: the kernel's logs (clipped_fraction; 0 for the Gaussian), sigma_mean.
class EdmLoss : public flowkit::Loss {
 public:
  explicit EdmLoss(EdmLossOptions o) : o_(o) {}
  flowkit::LossOutput compute(flowkit::Model& model, const flowkit::Path* path, const flowkit::Batch& batch,
                              torch::Generator& gen) override;

 private:
  EdmLossOptions o_;
};

std::unique_ptr<flowkit::Component> make_edm_loss(const flowkit::Config& cfg, const flowkit::BuildContext& ctx);

}  // namespace pfgmpp
