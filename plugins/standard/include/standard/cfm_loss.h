// standard/cfm_loss.h — conditional flow matching: E ||v_theta(x_t, t) - dx_t||^2.
#pragma once
#include <torch/torch.h>

#include <memory>
#include <string>

#include "flowkit/config.h"
#include "flowkit/loss.h"
#include "flowkit/registry.h"
#include "standard/coupling.h"

namespace standard {

// The parameters of `standard.cfm` (defaults and ranges: plugin.json) and the domain's
// number of classes.
struct CFMOptions {
  std::string time_sampler;    // uniform | logit_normal
  double logit_mean = 0;
  double logit_std = 0;
  double label_dropout = 0;    // probability of replacing a label by the null class
  int64_t num_classes = 0;     // null class index (from the domain)
  CouplingOptions coupling;    // how noise is paired with data
  std::string coupling_group_by;  // batch field within whose equal values noise is paired
};
// Reads every key of a resolved config (num_classes stays 0).
CFMOptions cfm_options(const flowkit::Config& cfg);

// Draws n times: uniform on [0, 1) or sigmoid(N(logit_mean, logit_std^2)).
torch::Tensor sample_times(const CFMOptions& options, int64_t n, torch::Generator& gen,
                           const torch::TensorOptions& tensor_options);

class CFMLoss : public flowkit::Loss {
 public:
  explicit CFMLoss(CFMOptions options) : options_(std::move(options)) {}
  // batch "x" is x1; x0 from path->prior, re-paired by the coupling; passes batch "label"
  // (after dropout) as cond. Logs the pairs' mean squared distance before and after pairing.
  flowkit::LossOutput compute(flowkit::Model& model, const flowkit::Path* path, const flowkit::Batch& batch,
                              torch::Generator& gen) override;
  const CFMOptions& options() const { return options_; }

 private:
  Coupled couple_noise(const torch::Tensor& x0, const torch::Tensor& x1, const flowkit::Batch& batch,
                       torch::Generator& gen) const;
  CFMOptions options_;
};

// Factory of `standard.cfm`: params time_sampler, logit_mean, logit_std, label_dropout, coupling,
// sinkhorn_epsilon, sinkhorn_iterations, coupling_group_by.
std::unique_ptr<flowkit::Component> make_cfm(const flowkit::Config& cfg, const flowkit::BuildContext& ctx);

}  // namespace standard
