// pfgmpp/kernel.h — the N+D perturbation kernel and the path `pfgmpp.kernel`.
//
// Data x in R^N is augmented by D dimensions; with r = sigma sqrt(D) the perturbation kernel
// is p_r(x|y) ∝ (|x-y|^2 + r^2)^(-(N+D)/2), D = inf being the Gaussian (EDM) case. The
// probability-flow ODE in sigma is EDM's, dx/dsigma = (x - D_theta(x, sigma)) / sigma, for
// every D: only the training perturbation and the prior depend on D.
#pragma once
#include <torch/torch.h>

#include <limits>
#include <memory>
#include <vector>

#include "flowkit/capabilities/noise_kernel.h"
#include "flowkit/config.h"
#include "flowkit/path.h"
#include "flowkit/registry.h"

namespace pfgmpp {

constexpr double kInf = std::numeric_limits<double>::infinity();

// Gamma(alpha, 1) draws (float64, on the generator's device, moved to `device`).
torch::Tensor gamma_draws(double alpha, int64_t n, torch::Generator& gen, const torch::Device& device);

struct Perturbation {
  torch::Tensor noise;          // [n, item_shape...] of options' dtype/device
  torch::Tensor radius;         // [n] float64: |noise|
  double clipped_fraction = 0;  // share of the Beta draws changed by the clip
};

// n perturbations of the N+D kernel at noise level sigma ([n] float64 or a scalar):
// R = sigma sqrt(D) sqrt(B/(1-B)), B ~ Beta(N/2, D/2) (= G1/(G1+G2), G1 ~ Gamma(N/2),
// G2 ~ Gamma(D/2)), direction uniform on the sphere (g/|g|, g ~ N(0, I)). D = inf: sigma*N(0, I).
// clip > 0 clips B to [clip, 1 - clip] (the official training code, clip = 1e-3);
// clip_lower = false applies only the upper bound 1 - clip.
Perturbation perturb(double D, const torch::Tensor& sigma, int64_t n, const std::vector<int64_t>& item_shape,
                     torch::Generator& gen, const torch::TensorOptions& options, double clip = 0,
                     bool clip_lower = true);

// The parameters of `pfgmpp.kernel` (defaults and ranges: plugin.json).
struct KernelOptions {
  double D = 0;           // augmented dimensions; inf = Gaussian
  double sigma_min = 0;   // range of the t <-> sigma map of sample()
  double sigma_max = 0;
  double beta_clip = 0;   // training clip of B (0: none)
  bool clip_lower = false;  // also clip B from below (official); see docs/methods/pfgmpp.md
};
// Reads every key of a resolved config; checks sigma_min < sigma_max.
KernelOptions kernel_options(const flowkit::Config& cfg);

// The path. sample(x0, x1, t): sigma(t) = sigma_max^(1-t) sigma_min^t (t = 0 noise), x_t = x1 +
// sigma(t) x0, dx_t = sigma'(t) x0, extras "sigma". prior(): the unit-scale (sigma = 1) kernel
// perturbation, not clipped; the sampler multiplies it by sigma_max (so r_max = sigma_max sqrt(D)).
// As a NoiseKernel it gives the clipped training perturbation at given sigmas (logs
// "clipped_fraction").
class KernelPath : public flowkit::Path, public flowkit::NoiseKernel {
 public:
  explicit KernelPath(KernelOptions o) : o_(o) {}
  flowkit::PathSample sample(const torch::Tensor& x0, const torch::Tensor& x1, const torch::Tensor& t) const override;
  torch::Tensor prior(int64_t n, const std::vector<int64_t>& item_shape, torch::Generator& gen,
                      const torch::TensorOptions& options) const override;
  flowkit::NoiseDraw training_noise(const torch::Tensor& sigma, const std::vector<int64_t>& item_shape,
                                    torch::Generator& gen, const torch::TensorOptions& options) const override;
  torch::Tensor sigma_of_t(const torch::Tensor& t) const;
  const KernelOptions& options() const { return o_; }

 private:
  KernelOptions o_;
};

std::unique_ptr<flowkit::Component> make_kernel(const flowkit::Config& cfg, const flowkit::BuildContext& ctx);

}  // namespace pfgmpp
