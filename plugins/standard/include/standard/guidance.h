// standard/guidance.h — sampling-time guidance stages: classifier-free guidance, and the
// gradient of a box objective on the data estimate (flowkit/objective_guidance.h).
#pragma once
#include <torch/torch.h>

#include <memory>
#include <vector>

#include "flowkit/config.h"
#include "flowkit/objective_guidance.h"
#include "flowkit/registry.h"

namespace standard {

// The parameters of `standard.cfg` (defaults: plugin.json) and the null class.
struct CfgOptions {
  flowkit::GuidanceWindow window;  // scale w: v = v_null + w (v_label − v_null); 1 is plain conditional sampling
  int64_t null_label = 0;          // the domain's num_classes: the class the training dropout used
};

// Classifier-free guidance: the conditional and the null-class velocity in one batched pass
// of 2B items (2 network evaluations per item inside the interval, 1 outside or at scale 1).
class ClassifierFreeGuidance : public flowkit::Guidance {
 public:
  explicit ClassifierFreeGuidance(CfgOptions options) : options_(options) {}
  torch::Tensor velocity(flowkit::Model& model, const flowkit::Path* path, const torch::Tensor& x, const torch::Tensor& t,
                         const flowkit::Conditioning& cond, int64_t* evaluations) const override;
  const CfgOptions& options() const { return options_; }

 private:
  CfgOptions options_;
};

// L(x̂) = ½ Σ (distance of each coordinate of x̂ to the box [low, high])²: steers samples into
// a region of data space without retraining (any domain of flat or shaped items).
class BoxGuidance : public flowkit::ObjectiveGuidance {
 public:
  BoxGuidance(flowkit::GuidanceWindow window, std::vector<double> low, std::vector<double> high)
      : ObjectiveGuidance(window), low_(std::move(low)), high_(std::move(high)) {}
  torch::Tensor objective(const torch::Tensor& x_hat, const flowkit::Conditioning& cond) const override;

 private:
  std::vector<double> low_, high_;  // per coordinate of the flattened item, or one value for all
};

// Factories: standard.cfg, standard.box.
std::unique_ptr<flowkit::Component> make_cfg(const flowkit::Config& cfg, const flowkit::BuildContext& ctx);
std::unique_ptr<flowkit::Component> make_box_guidance(const flowkit::Config& cfg, const flowkit::BuildContext& ctx);

}  // namespace standard
