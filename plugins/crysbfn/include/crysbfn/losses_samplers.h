// crysbfn/losses_samplers.h — training objectives and samplers of CrysBFN and of the DiffCSP-style
// baseline. Both read their schedules from the pipeline's path through the capabilities
// BayesianFlowSchedule / DiffusionSchedule (crysbfn/paths.h) and run the network through its
// named crystal outputs (flowkit::NamedOutputModel, named fields in crysbfn/cspnet.h), so a
// wrapper model that delegates capabilities works too.
#pragma once
#include <torch/torch.h>

#include <memory>
#include <string>

#include "crysbfn/cspnet.h"
#include "crysbfn/paths.h"
#include "flowkit/loss.h"
#include "flowkit/solver.h"

namespace crysbfn {

// CrysBFN's discrete-time objective as the official code computes it: per crystal a step
// i ~ U{1..N}, t = (i-1)/N; coordinates from the simulated circular flow at i-1 (or the
// Gaussian flow in the Euclidean ablation), lattice from the Gaussian flow at t, types (gen)
// from the discrete flow at t; loss = cost_lattice L_lattice + cost_coord L_coord (+ cost_type L_type).
// The parameters of `crysbfn.bfn_loss`, filled by bfn_loss_options (defaults: plugin.json).
struct BfnLossOptions {
  double cost_coord = 0, cost_lattice = 0, cost_type = 0;
  bool cosine = false;  // coordinate distance: false = squared minimum-image angle (code), true = 2(1 - cos) (paper)
};
// Reads every key of `crysbfn.bfn_loss`.
BfnLossOptions bfn_loss_options(const flowkit::Config& cfg);
class BfnLoss : public flowkit::Loss {
 public:
  explicit BfnLoss(BfnLossOptions o) : o_(o) {}
  flowkit::LossOutput compute(flowkit::Model& model, const flowkit::Path* path, const flowkit::Batch& batch,
                              torch::Generator& gen) override;

 private:
  BfnLossOptions o_;
};

// End-back sampler: at each call the network sees the belief at index b (t = b/N) and the
// next belief is redrawn from the Bayesian-flow distribution given its prediction. steps = N
// visits every index (NFE = N); fewer steps stride over the indices (b_k = round(k N / steps)).
class BfnSampler : public flowkit::Solver {
 public:
  explicit BfnSampler(int64_t steps) : steps_(steps) {}
  flowkit::SolveResult sample(flowkit::Model& model, const flowkit::Path* path, const flowkit::SampleRequest& req,
                              torch::Generator& gen) const override;

 private:
  int64_t steps_;  // 0: the flow's N
};

// DiffCSP: wrapped-normal score matching on fractional coordinates (target normalised by
// sqrt(E[score^2])), epsilon-prediction DDPM on the raw lattice; s ~ U{1..T}.
class DiffusionLoss : public flowkit::Loss {
 public:
  DiffusionLoss(double cost_coord, double cost_lattice) : cost_coord_(cost_coord), cost_lattice_(cost_lattice) {}
  flowkit::LossOutput compute(flowkit::Model& model, const flowkit::Path* path, const flowkit::Batch& batch,
                              torch::Generator& gen) override;

 private:
  double cost_coord_, cost_lattice_;
};

// The reverse-diffusion index grid s_1 > ... > s_n >= 1 (then 0). `leading` is DDIM's
// s = 1 + j * floor(T / n), j = n-1..0: with the clipped cosine schedule alpha_bar_T ~ 2e-10, so a
// grid that starts at T divides the first lattice estimate's eps error by sqrt(alpha_bar_T) ~ 1.6e-5.
// Otherwise T = s_1 > ... > s_n = 1 evenly (the earlier grid, kept to reproduce it). Both are
// 1, 2, ..., T when n = T.
std::vector<int64_t> diffusion_grid(int64_t T, int64_t n, bool leading);

// Reverse diffusion over `steps` indices of diffusion_grid (strided when steps < T): predictor = the VE reverse step on coordinates and the DDPM posterior on the
// lattice; optional Langevin corrector on the coordinates first (one more network call per step).
// `deterministic`: DDIM (eta = 0) instead — on the coordinates through Tweedie's estimate
// F0 = F + sigma^2 s, on the lattice through L0 and eps — the usual few-step variant.
class DiffusionSampler : public flowkit::Solver {
 public:
  DiffusionSampler(int64_t steps, bool corrector, double step_lr, bool deterministic, bool leading_grid)
      : steps_(steps), corrector_(corrector), step_lr_(step_lr), deterministic_(deterministic), leading_grid_(leading_grid) {}
  flowkit::SolveResult sample(flowkit::Model& model, const flowkit::Path* path, const flowkit::SampleRequest& req,
                              torch::Generator& gen) const override;

 private:
  int64_t steps_;
  bool corrector_;
  double step_lr_;
  bool deterministic_;  // DDIM (eta = 0) on coordinates and lattice
  bool leading_grid_;   // diffusion_grid's `leading`
};

// Factories of `crysbfn.bfn_loss`, `crysbfn.diffusion_loss`, `crysbfn.bfn_sampler` and
// `crysbfn.diffusion_sampler`.
std::unique_ptr<flowkit::Component> make_bfn_loss(const flowkit::Config& cfg, const flowkit::BuildContext& ctx);
std::unique_ptr<flowkit::Component> make_diffusion_loss(const flowkit::Config& cfg, const flowkit::BuildContext& ctx);
std::unique_ptr<flowkit::Component> make_bfn_sampler(const flowkit::Config& cfg, const flowkit::BuildContext& ctx);
std::unique_ptr<flowkit::Component> make_diffusion_sampler(const flowkit::Config& cfg, const flowkit::BuildContext& ctx);

}  // namespace crysbfn
