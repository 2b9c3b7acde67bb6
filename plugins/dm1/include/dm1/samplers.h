// dm1/samplers.h — the MeanFlow sampler and the direct (regression) sampler. Neither is an
// ODE integrator: each implements only flowkit::Solver::sample.
#pragma once
#include <torch/torch.h>

#include <memory>

#include "flowkit/config.h"
#include "flowkit/registry.h"
#include "flowkit/solver.h"

namespace dm1 {

// `dm1.meanflow_sampler`: z ~ prior at t = 1, then z_r = z_t - (t - r) u(z_t, r, t) over
// t = linspace(1, 0, k + 1), clamped to [-clip, clip] (clip 0: none) after every step.
// k = SampleRequest::steps, or `steps` when the request says 0.
class MeanFlowSampler : public flowkit::Solver {
 public:
  MeanFlowSampler(int64_t steps, double clip) : steps_(steps), clip_(clip) {}
  flowkit::SolveResult sample(flowkit::Model& model, const flowkit::Path* path, const flowkit::SampleRequest& req,
                              torch::Generator& gen) const override;

 private:
  int64_t steps_;
  double clip_;
};

// `dm1.direct`: one forward pass model(0, t = 0, r = 0, obs) (the regression baseline),
// clamped to [-clip, clip] (clip 0: none), whatever the requested steps.
class DirectSampler : public flowkit::Solver {
 public:
  explicit DirectSampler(double clip) : clip_(clip) {}
  flowkit::SolveResult sample(flowkit::Model& model, const flowkit::Path* path, const flowkit::SampleRequest& req,
                              torch::Generator& gen) const override;

 private:
  double clip_;
};

std::unique_ptr<flowkit::Component> make_meanflow_sampler(const flowkit::Config& cfg, const flowkit::BuildContext& ctx);
std::unique_ptr<flowkit::Component> make_direct_sampler(const flowkit::Config& cfg, const flowkit::BuildContext& ctx);

}  // namespace dm1
