// Classifier-free guidance and box-objective guidance.
#include <torch/torch.h>

#include "flowkit/capabilities/velocity_conversions.h"
#include "flowkit/capability.h"
#include "flowkit/domain.h"
#include "flowkit/error.h"
#include "flowkit/model.h"
#include "flowkit/path.h"
#include "standard/guidance.h"
#include "standard/util.h"

namespace standard {

torch::Tensor ClassifierFreeGuidance::velocity(flowkit::Model& model, const flowkit::Path*, const torch::Tensor& x,
                                               const torch::Tensor& t, const flowkit::Conditioning& cond,
                                               int64_t* evaluations) const {
  if (!cond.has("label"))
    throw flowkit::Error("standard.cfg: classifier-free guidance needs a 'label' condition, and sampling gives none");
  const int64_t B = x.size(0);
  const flowkit::GuidanceWindow& w = options_.window;
  const torch::Tensor inside = w.inside(t, B);
  // Scale 1 is the conditional velocity itself: no null-class pass to pay for.
  if (w.scale == 1.0 || !inside.any().item<bool>()) {
    *evaluations = 1;
    return model.forward(x, t, cond);
  }
  // One pass of 2B items: the requested labels, then the null class; every other condition twice.
  flowkit::Conditioning both;
  for (const auto& [name, value] : cond) both.set(name, torch::cat({value, value}));
  const torch::Tensor label = cond.at("label");
  both.set("label", torch::cat({label, torch::full_like(label, options_.null_label)}));
  const torch::Tensor tb = flowkit::per_item_times(t, B);
  torch::Tensor v = model.forward(torch::cat({x, x}), torch::cat({tb, tb}), both);
  torch::Tensor v_label = v.slice(0, 0, B), v_null = v.slice(0, B);
  *evaluations = 2;
  return flowkit::where_items(inside, v_null + w.scale * (v_label - v_null), v_label);
}

torch::Tensor BoxGuidance::objective(const torch::Tensor& x_hat, const flowkit::Conditioning&) const {
  torch::Tensor flat = x_hat.flatten(1);
  const int64_t d = flat.size(1);
  auto bound = [&](const std::vector<double>& b) {
    torch::Tensor v = torch::tensor(b, flat.options());
    return b.size() == 1 ? v.expand({d}) : v;
  };
  if (low_.size() != 1 && static_cast<int64_t>(low_.size()) != d)
    throw flowkit::Error("standard.box: low/high have " + std::to_string(low_.size()) + " values but an item has " +
                         std::to_string(d) + " coordinates");
  torch::Tensor below = torch::relu(bound(low_) - flat), above = torch::relu(flat - bound(high_));
  return 0.5 * (below.pow(2) + above.pow(2)).sum(1);
}

namespace {
flowkit::GuidanceWindow interval_and_scale(const flowkit::Config& cfg) {
  flowkit::GuidanceWindow o;
  o.scale = cfg.get<double>("scale");
  o.t_min = cfg.get<double>("t_min");
  o.t_max = cfg.get<double>("t_max");
  if (o.t_min > o.t_max) cfg.fail("t_max", "must be >= t_min");
  return o;
}
}  // namespace

std::unique_ptr<flowkit::Component> make_cfg(const flowkit::Config& cfg, const flowkit::BuildContext& ctx) {
  CfgOptions o;
  o.window = interval_and_scale(cfg);
  o.null_label = ctx.domain ? ctx.domain->num_classes() : 0;
  if (o.null_label <= 0)
    cfg.fail("type", "classifier-free guidance needs a labelled domain (num_classes > 0) and a model trained with "
                     "label dropout (the null class)");
  return std::make_unique<ClassifierFreeGuidance>(o);
}

std::unique_ptr<flowkit::Component> make_box_guidance(const flowkit::Config& cfg, const flowkit::BuildContext& ctx) {
  const flowkit::GuidanceWindow o = interval_and_scale(cfg);
  if (!flowkit::capability<flowkit::VelocityConversions>(ctx.path))
    cfg.fail("type", "box guidance needs a path with the velocity_conversions capability (its data estimate)");
  std::vector<double> low = optional_number_array(cfg, "low").value_or(std::vector<double>{});
  std::vector<double> high = optional_number_array(cfg, "high").value_or(std::vector<double>{});
  if (low.empty()) cfg.fail("low", "needs at least one value");
  if (high.size() != low.size()) cfg.fail("high", "needs as many values as low (" + std::to_string(low.size()) + ")");
  for (size_t i = 0; i < low.size(); ++i)
    if (!(low[i] <= high[i])) cfg.fail("high", "value " + std::to_string(i) + " is below low's");
  return std::make_unique<BoxGuidance>(o, low, high);
}

}  // namespace standard
