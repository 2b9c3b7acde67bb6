// standard/affine_path.h — affine Gaussian probability paths x_t = alpha_t x1 + sigma_t x0
// (t = 0 noise, t = 1 data, as facebookresearch/flow_matching), their schedulers and the
// closed-form conversions between velocity, target (x1) and epsilon (x0) predictions.
#pragma once
#include <torch/torch.h>

#include <memory>
#include <string>

#include "flowkit/config.h"
#include "flowkit/capabilities/invertible.h"
#include "flowkit/capabilities/prior_density.h"
#include "flowkit/capabilities/velocity_conversions.h"
#include "flowkit/path.h"
#include "flowkit/registry.h"

namespace standard {

// alpha_t, sigma_t and their time derivatives, evaluated elementwise on t.
struct SchedulerOutput {
  torch::Tensor alpha, sigma, d_alpha, d_sigma;
};

class Scheduler {
 public:
  virtual ~Scheduler() = default;
  virtual SchedulerOutput operator()(const torch::Tensor& t) const = 0;
  virtual std::string name() const = 0;
};

// alpha = t, sigma = 1 - t.
class CondOTScheduler : public Scheduler {
 public:
  SchedulerOutput operator()(const torch::Tensor& t) const override;
  std::string name() const override { return "condot"; }
};

// alpha = t^n, sigma = 1 - t^n.
class PolynomialScheduler : public Scheduler {
 public:
  explicit PolynomialScheduler(double n) : n_(n) {}
  SchedulerOutput operator()(const torch::Tensor& t) const override;
  std::string name() const override { return "polynomial"; }

 private:
  double n_;
};

// Variance preserving: T(t) = (1-t)^2 (beta_max - beta_min) / 2 + (1-t) beta_min,
// alpha = exp(-T/2), sigma = sqrt(1 - exp(-T)). d_sigma is singular at t = 1 (sigma = 0).
class VPScheduler : public Scheduler {
 public:
  VPScheduler(double beta_min, double beta_max) : beta_min_(beta_min), beta_max_(beta_max) {}
  SchedulerOutput operator()(const torch::Tensor& t) const override;
  std::string name() const override { return "vp"; }

 private:
  double beta_min_, beta_max_;
};

// alpha = sin(pi t / 2), sigma = cos(pi t / 2).
class CosineScheduler : public Scheduler {
 public:
  SchedulerOutput operator()(const torch::Tensor& t) const override;
  std::string name() const override { return "cosine"; }
};

// The parameters of `standard.affine` (defaults and ranges: plugin.json).
struct SchedulerOptions {
  std::string scheduler;  // condot | polynomial | vp | cosine
  double exponent = 0;    // polynomial
  double beta_min = 0, beta_max = 0;  // vp
};
// Reads every key of a resolved config; checks beta_max >= beta_min.
SchedulerOptions scheduler_options(const flowkit::Config& cfg);
std::shared_ptr<const Scheduler> make_scheduler(const SchedulerOptions& options);

// Reshapes t ([B] or 0-dim) so that it broadcasts over the item dimensions of `like`, in
// like's dtype and device.
torch::Tensor broadcast_time(const torch::Tensor& t, const torch::Tensor& like);

// The path. Conversions use x = alpha x1 + sigma x0 and v = d_alpha x1 + d_sigma x0:
//   target_to_velocity : v  = (d_sigma/sigma) x + (d_alpha - d_sigma alpha/sigma) x1
//   epsilon_to_velocity: v  = (d_alpha/alpha) x + (d_sigma - d_alpha sigma/alpha) eps
//   velocity_to_target : x1 = (sigma v - d_sigma x) / (sigma d_alpha - d_sigma alpha)
//   velocity_to_epsilon: x0 = (alpha v - d_alpha x) / (alpha d_sigma - d_alpha sigma)
//   target_to_epsilon  : x0 = (x - alpha x1) / sigma
//   epsilon_to_target  : x1 = (x - sigma x0) / alpha
// Score (Gaussian source x0 ~ N(0, I), Tweedie): grad log p_t(x) = -E[x0 | x_t = x] / sigma,
// and E[x0 | x] = velocity_to_epsilon(v*, x) for the marginal velocity v*, so
//   score = (alpha v - d_alpha x) / (sigma (d_alpha sigma - alpha d_sigma)).
class AffinePath : public flowkit::Path, public flowkit::VelocityConversions, public flowkit::PriorDensity {
 public:
  explicit AffinePath(std::shared_ptr<const Scheduler> scheduler);

  flowkit::PathSample sample(const torch::Tensor& x0, const torch::Tensor& x1,
                             const torch::Tensor& t) const override;
  torch::Tensor prior(int64_t n, const std::vector<int64_t>& item_shape, torch::Generator& gen,
                      const torch::TensorOptions& options) const override;
  // PriorDensity: the prior is N(0, I).
  torch::Tensor prior_log_density(const torch::Tensor& x) const override {
    return flowkit::standard_normal_log_density(x);
  }
  // VelocityConversions: x̂1 = velocity_to_target, and the score above.
  torch::Tensor velocity_to_data(const torch::Tensor& velocity, const torch::Tensor& x,
                                 const torch::Tensor& t) const override {
    return velocity_to_target(velocity, x, t);
  }
  torch::Tensor velocity_to_score(const torch::Tensor& velocity, const torch::Tensor& x,
                                  const torch::Tensor& t) const override;

  const Scheduler& scheduler() const { return *scheduler_; }
  // Scheduler output with t broadcast against `like`.
  SchedulerOutput coefficients(const torch::Tensor& t, const torch::Tensor& like) const;

  torch::Tensor target_to_velocity(const torch::Tensor& x1, const torch::Tensor& x, const torch::Tensor& t) const;
  torch::Tensor epsilon_to_velocity(const torch::Tensor& eps, const torch::Tensor& x, const torch::Tensor& t) const;
  torch::Tensor velocity_to_target(const torch::Tensor& v, const torch::Tensor& x, const torch::Tensor& t) const;
  torch::Tensor velocity_to_epsilon(const torch::Tensor& v, const torch::Tensor& x, const torch::Tensor& t) const;
  torch::Tensor target_to_epsilon(const torch::Tensor& x1, const torch::Tensor& x, const torch::Tensor& t) const;
  torch::Tensor epsilon_to_target(const torch::Tensor& eps, const torch::Tensor& x, const torch::Tensor& t) const;

 private:
  std::shared_ptr<const Scheduler> scheduler_;
};

// Factory of `standard.affine`: params scheduler, exponent, beta_min, beta_max.
std::unique_ptr<flowkit::Component> make_affine_path(const flowkit::Config& cfg, const flowkit::BuildContext& ctx);

}  // namespace standard
