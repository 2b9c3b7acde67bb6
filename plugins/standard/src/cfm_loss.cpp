// The conditional flow matching loss.
#include <torch/torch.h>

#include "flowkit/domain.h"
#include "flowkit/error.h"
#include "flowkit/model.h"
#include "flowkit/path.h"
#include "flowkit/random.h"
#include "standard/cfm_loss.h"

namespace standard {

namespace {
std::string join(const std::vector<std::string>& names) {
  std::string out;
  for (const auto& n : names) out += (out.empty() ? "" : ", ") + n;
  return out;
}
}  // namespace

torch::Tensor sample_times(const CFMOptions& o, int64_t n, torch::Generator& gen, const torch::TensorOptions& opts) {
  if (o.time_sampler == "logit_normal") return torch::sigmoid(o.logit_mean + o.logit_std * flowkit::random::randn({n}, gen, opts));
  return flowkit::random::rand({n}, gen, opts);
}

flowkit::LossOutput CFMLoss::compute(flowkit::Model& model, const flowkit::Path* path, const flowkit::Batch& batch,
                                     torch::Generator& gen) {
  if (!path) throw flowkit::Error("standard.cfm needs a path, but the pipeline has none");
  const torch::Tensor& x1 = batch.at("x");
  const int64_t B = x1.size(0);
  std::vector<int64_t> item(x1.sizes().begin() + 1, x1.sizes().end());
  torch::Tensor x0 = path->prior(B, item, gen, x1.options());
  const Coupled pairs = couple_noise(x0, x1, batch, gen);
  x0 = pairs.x0;
  torch::Tensor t = sample_times(options_, B, gen, x1.options());
  flowkit::PathSample ps = path->sample(x0, x1, t);
  // Every field other than "x" conditions the model (labels, observations, ...).
  flowkit::Conditioning cond = batch.without({"x"});
  if (batch.has("label")) {
    torch::Tensor label = batch.at("label").to(torch::kLong);
    if (options_.label_dropout > 0) {
      torch::Tensor drop = flowkit::random::rand({B}, gen, label.options().dtype(torch::kFloat)) < options_.label_dropout;
      label = torch::where(drop, torch::full_like(label, options_.num_classes), label);
    }
    cond.set("label", label);
  }
  torch::Tensor v = model.forward(ps.xt, ps.t, cond);
  flowkit::LossOutput out;
  out.loss = (v - ps.dxt).pow(2).mean();
  out.logs["loss"] = out.loss.item<double>();
  if (options_.coupling.kind != "independent") {
    out.logs["independent_cost"] = pairs.independent_cost;
    out.logs["coupled_cost"] = pairs.coupled_cost;
  }
  return out;
}

Coupled CFMLoss::couple_noise(const torch::Tensor& x0, const torch::Tensor& x1, const flowkit::Batch& batch,
                              torch::Generator& gen) const {
  const CouplingOptions& c = options_.coupling;
  if (c.kind == "independent") return couple(c, x0, x1, {}, gen);
  const std::string& by = options_.coupling_group_by;
  if (!by.empty() && batch.has(by)) return couple(c, x0, x1, batch.at(by), gen);
  // Pairing noise across different conditions would bias the noise each condition learns from.
  const std::vector<std::string> conditions = batch.without({"x"}).names();
  if (!conditions.empty())
    throw flowkit::Error("standard.cfm: coupling " + c.kind + " pairs noise only within groups of equal \"" + by +
                         "\", but the batch has no such field and is conditioned on: " + join(conditions) +
                         "; set coupling_group_by to a discrete field, or coupling to independent");
  return couple(c, x0, x1, {}, gen);
}

CFMOptions cfm_options(const flowkit::Config& cfg) {
  CFMOptions o;
  o.time_sampler = cfg.get<std::string>("time_sampler");
  o.logit_mean = cfg.get<double>("logit_mean");
  o.logit_std = cfg.get<double>("logit_std");
  o.label_dropout = cfg.get<double>("label_dropout");
  o.coupling.kind = cfg.get<std::string>("coupling");
  o.coupling.sinkhorn_epsilon = cfg.get<double>("sinkhorn_epsilon");
  o.coupling.sinkhorn_iterations = cfg.get<int64_t>("sinkhorn_iterations");
  o.coupling_group_by = cfg.get<std::string>("coupling_group_by");
  return o;
}

std::unique_ptr<flowkit::Component> make_cfm(const flowkit::Config& cfg, const flowkit::BuildContext& ctx) {
  CFMOptions o = cfm_options(cfg);
  if (!ctx.path) cfg.fail("type", "standard.cfm needs a path, but the pipeline has none");
  o.num_classes = ctx.domain ? ctx.domain->num_classes() : 0;
  if (o.label_dropout > 0 && o.num_classes <= 0)
    cfg.fail("label_dropout", "needs a labelled domain (num_classes > 0)");
  return std::make_unique<CFMLoss>(o);
}

}  // namespace standard
