// crysbfn/paths.h — the two crystal "paths": CrysBFN's Bayesian flow (`crysbfn.bfn`) and the
// DiffCSP-style diffusion (`crysbfn.diffusion`). Each holds its schedules, so the loss and the
// sampler of a pipeline read one definition. Through the generic flowkit::Path contract each
// exposes its lattice process on a plain tensor (t = 0 prior, t = 1 data); the per-atom parts
// are the capabilities BayesianFlowSchedule and DiffusionSchedule below, which crysbfn's
// losses and samplers query with flowkit::capability<>.
#pragma once
#include <torch/torch.h>

#include <memory>
#include <string>
#include <vector>

#include "crysbfn/bfn_math.h"
#include "flowkit/config.h"
#include "flowkit/path.h"
#include "flowkit/registry.h"

namespace crysbfn {

// ---- CrysBFN ------------------------------------------------------------------------------
// The parameters of `crysbfn.bfn`; bayesian_flow_options fills them from the resolved config
// (the defaults live only in plugin.json).
struct BayesianFlowOptions {
  int64_t steps = 0;         // N: discrete-time steps of training (and of the full sampler)
  double beta1 = 0;          // final coordinate accuracy (von Mises concentration)
  double sigma1 = 0;         // lattice (and Euclidean-coordinate) Gaussian BFN: sigma_1
  double lattice_std = 0;    // lattice normalisation
  double beta1_type = 0;     // discrete BFN on atom types: beta(t) = beta1_type * t^2
  bool periodic = false;     // false: the Euclidean ablation (Gaussian BFN on fractional coordinates)
  std::string schedule_file; // optional (i, alpha, beta) table instead of the computed schedule
};
// Reads every key of `crysbfn.bfn`.
BayesianFlowOptions bayesian_flow_options(const flowkit::Config& cfg);

// Capability of a crystal Bayesian flow: its schedules and flow distributions, as the BFN
// loss and sampler use them.
class BayesianFlowSchedule {
 public:
  virtual ~BayesianFlowSchedule();
  virtual const BayesianFlowOptions& options() const = 0;
  // The coordinates' accuracy schedule alpha_1..alpha_N (and beta).
  virtual const AccuracySchedule& schedule() const = 0;
  // gamma(t) = 1 - sigma1^(2t): the Gaussian BFN's accuracy fraction at time t.
  virtual torch::Tensor gamma(const torch::Tensor& t) const = 0;
  // mu ~ N(gamma x, gamma (1 - gamma)): the Gaussian Bayesian-flow distribution.
  virtual torch::Tensor gaussian_flow(const torch::Tensor& x, const torch::Tensor& t, torch::Generator& gen) const = 0;
  // Weight of the discrete-time Gaussian loss at step i (1..N): N (1 - s^(2/N)) / (2 s^(2i/N)).
  virtual torch::Tensor gaussian_weight(const torch::Tensor& i) const = 0;
  // Weight of the circular loss at step i: N alpha_i I1(alpha_i)/I0(alpha_i) (the code's).
  virtual torch::Tensor circular_weight(const torch::Tensor& i) const = 0;
  // Per-atom conditioning input of a belief: periodic: normalised log concentration of c;
  // Euclidean: the same quantity for the Gaussian precision 1/(1 - gamma(t)).
  virtual torch::Tensor accuracy_input(const torch::Tensor& c) const = 0;
  virtual torch::Tensor euclidean_accuracy_input(const torch::Tensor& t_atoms) const = 0;
  // Discrete BFN on types: theta = softmax(y), y ~ N(beta(t)(K p - 1), beta(t) K I), p [A,K]
  // (a one-hot of the data in training, the network's distribution in end-back sampling).
  virtual torch::Tensor type_flow(const torch::Tensor& p, const torch::Tensor& t_atoms, torch::Generator& gen) const = 0;
};

class BayesianFlow : public flowkit::Path, public BayesianFlowSchedule {
 public:
  explicit BayesianFlow(BayesianFlowOptions o);
  const BayesianFlowOptions& options() const override { return o_; }
  const AccuracySchedule& schedule() const override { return schedule_; }
  torch::Tensor gamma(const torch::Tensor& t) const override;
  torch::Tensor gaussian_flow(const torch::Tensor& x, const torch::Tensor& t, torch::Generator& gen) const override;
  torch::Tensor gaussian_weight(const torch::Tensor& i) const override;
  torch::Tensor circular_weight(const torch::Tensor& i) const override;
  torch::Tensor accuracy_input(const torch::Tensor& c) const override { return normalised_log_accuracy(c, o_.beta1); }
  torch::Tensor euclidean_accuracy_input(const torch::Tensor& t_atoms) const override;
  torch::Tensor type_flow(const torch::Tensor& p, const torch::Tensor& t_atoms, torch::Generator& gen) const override;

  // flowkit::Path: the lattice's Gaussian flow with x0 = the standard normal draw:
  // xt = gamma x1 + sqrt(gamma (1 - gamma)) x0; prior = 0 (the flow's mean at t = 0).
  flowkit::PathSample sample(const torch::Tensor& x0, const torch::Tensor& x1, const torch::Tensor& t) const override;
  torch::Tensor prior(int64_t n, const std::vector<int64_t>& item_shape, torch::Generator& gen,
                      const torch::TensorOptions& options) const override;

 private:
  BayesianFlowOptions o_;
  AccuracySchedule schedule_;
  torch::Tensor circular_weight_;  // [N+1] float64, index i
};

// ---- DiffCSP-style diffusion -----------------------------------------------------------------
// The parameters of `crysbfn.diffusion`, filled by diffusion_options (defaults: plugin.json).
struct DiffusionOptions {
  int64_t steps = 0;       // T
  double sigma_begin = 0;  // wrapped-normal noise of the coordinates at s = 1
  double sigma_end = 0;    // ... at s = T (log-spaced in between)
  double cosine_s = 0;     // cosine schedule of the lattice DDPM
};
// Reads every key of `crysbfn.diffusion`; fails unless sigma_end > sigma_begin.
DiffusionOptions diffusion_options(const flowkit::Config& cfg);

// Capability of a crystal diffusion: its discrete schedules, index s in 0..T (0: data),
// float64 tables of T+1 entries.
class DiffusionSchedule {
 public:
  virtual ~DiffusionSchedule();
  virtual const DiffusionOptions& options() const = 0;
  virtual const torch::Tensor& alpha_bar() const = 0;   // lattice DDPM, alpha_bar[0] = 1
  virtual const torch::Tensor& sigma() const = 0;       // coordinate noise, sigma[0] = 0
  virtual const torch::Tensor& sigma_norm() const = 0;  // E[score^2] of WN(sigma)
};

class WrappedDiffusion : public flowkit::Path, public DiffusionSchedule {
 public:
  explicit WrappedDiffusion(DiffusionOptions o);
  const DiffusionOptions& options() const override { return o_; }
  const torch::Tensor& alpha_bar() const override { return alpha_bar_; }
  const torch::Tensor& sigma() const override { return sigma_; }
  const torch::Tensor& sigma_norm() const override { return sigma_norm_; }
  // Score of the wrapped normal WN(0, sigma^2) (period 1) at x: d/dx log sum_k N(x + k; 0, sigma^2).
  static torch::Tensor wrapped_normal_score(const torch::Tensor& x, const torch::Tensor& sigma);

  // flowkit::Path: the lattice DDPM in flowkit time (t = 1 - s/T):
  // xt = sqrt(abar) x1 + sqrt(1 - abar) x0, with abar of the continuous cosine schedule.
  flowkit::PathSample sample(const torch::Tensor& x0, const torch::Tensor& x1, const torch::Tensor& t) const override;
  torch::Tensor prior(int64_t n, const std::vector<int64_t>& item_shape, torch::Generator& gen,
                      const torch::TensorOptions& options) const override;

 private:
  DiffusionOptions o_;
  torch::Tensor alpha_bar_, sigma_, sigma_norm_;
};

std::unique_ptr<flowkit::Component> make_bayesian_flow(const flowkit::Config& cfg, const flowkit::BuildContext& ctx);
std::unique_ptr<flowkit::Component> make_diffusion(const flowkit::Config& cfg, const flowkit::BuildContext& ctx);

}  // namespace crysbfn
