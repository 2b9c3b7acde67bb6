// pfgmpp/heun_sampler.h — the sampler `pfgmpp.heun`: EDM's Heun sampler on the sigma grid, with
// noise injection and weight quantization. It integrates in sigma, not in the framework's t, so
// it is a plain flowkit::Solver (no OdeIntegrator).
#pragma once
#include <torch/torch.h>

#include <memory>
#include <string>
#include <vector>

#include "flowkit/config.h"
#include "flowkit/registry.h"
#include "flowkit/solver.h"

namespace pfgmpp {

// The parameters of `pfgmpp.heun` (defaults and ranges: plugin.json).
struct HeunOptions {
  int64_t steps = 0;
  double sigma_min = 0, sigma_max = 0, rho = 0;
  double alpha = 0;     // noise injection x += alpha sigma_i eps before each step
  int64_t bits = 0;     // 0: no weight quantization; else b-bit per-tensor min-max
};
// Reads every key of a resolved config; checks sigma_min < sigma_max and bits != 1.
HeunOptions heun_options(const flowkit::Config& cfg);

// EDM grid: sigma_i = (smax^(1/rho) + i/(n-1) (smin^(1/rho) - smax^(1/rho)))^rho, i < n, then 0
// (n + 1 points, decreasing). n = 1 gives {sigma_max, 0}.
torch::Tensor edm_sigma_grid(int64_t n, double sigma_min, double sigma_max, double rho);

// Quantize-dequantize (per tensor, min-max affine, zero point clamped to [0, 2^b - 1]) every
// parameter whose name contains "weight" but none of "norm", "embed", "time", "map", "affine".
// Returns the names changed. (Used by the sampler; exposed for tests.)
std::vector<std::string> quantize_weights(torch::nn::Module& module, int64_t bits);
torch::Tensor quantize_tensor(const torch::Tensor& w, int64_t bits);

class HeunSampler : public flowkit::Solver {
 public:
  explicit HeunSampler(HeunOptions o) : o_(o) {}
  // x0 = sigma_max * path->prior(...) (path null: N(0, I) * sigma_max), then the ODE
  // dx/dsigma = (x - model(x, sigma, cond)) / sigma over edm_sigma_grid(steps): Heun steps, the
  // step into sigma = 0 Euler (NFE 2n - 1). alpha > 0 adds alpha sigma_i eps (eps from gen)
  // before each step; bits > 0 quantizes the model's weights for the call (restored after).
  flowkit::SolveResult sample(flowkit::Model& model, const flowkit::Path* path, const flowkit::SampleRequest& request,
                              torch::Generator& gen) const override;
  const HeunOptions& options() const { return o_; }

 private:
  HeunOptions o_;
};

std::unique_ptr<flowkit::Component> make_heun(const flowkit::Config& cfg, const flowkit::BuildContext& ctx);

}  // namespace pfgmpp
