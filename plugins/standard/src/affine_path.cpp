// The affine path, its schedulers and the velocity/target/epsilon/score conversions.
#include <torch/torch.h>

#include <algorithm>
#include <cmath>

#include "flowkit/error.h"
#include "flowkit/random.h"
#include "standard/affine_path.h"

namespace standard {

// ---- schedulers -------------------------------------------------------------------------

SchedulerOutput CondOTScheduler::operator()(const torch::Tensor& t) const {
  return {t, 1 - t, torch::ones_like(t), -torch::ones_like(t)};
}

SchedulerOutput PolynomialScheduler::operator()(const torch::Tensor& t) const {
  torch::Tensor a = t.pow(n_);
  torch::Tensor da = n_ * t.pow(n_ - 1);
  return {a, 1 - a, da, -da};
}

SchedulerOutput VPScheduler::operator()(const torch::Tensor& t) const {
  const double db = beta_max_ - beta_min_;
  torch::Tensor s = 1 - t;
  torch::Tensor T = 0.5 * s * s * db + s * beta_min_;
  torch::Tensor dT = -s * db - beta_min_;
  torch::Tensor alpha = torch::exp(-0.5 * T);
  torch::Tensor e = torch::exp(-T);
  torch::Tensor sigma = torch::sqrt(1 - e);
  return {alpha, sigma, -0.5 * dT * alpha, 0.5 * dT * e / sigma};
}

SchedulerOutput CosineScheduler::operator()(const torch::Tensor& t) const {
  const double h = M_PI / 2;
  torch::Tensor s = torch::sin(h * t), c = torch::cos(h * t);
  return {s, c, h * c, -h * s};
}

SchedulerOptions scheduler_options(const flowkit::Config& cfg) {
  SchedulerOptions o;
  o.scheduler = cfg.get<std::string>("scheduler");
  o.exponent = cfg.get<double>("exponent");
  o.beta_min = cfg.get<double>("beta_min");
  o.beta_max = cfg.get<double>("beta_max");
  if (o.beta_max < o.beta_min) cfg.fail("beta_max", "must be >= beta_min");
  return o;
}

std::shared_ptr<const Scheduler> make_scheduler(const SchedulerOptions& o) {
  const std::string& name = o.scheduler;
  if (name == "condot") return std::make_shared<CondOTScheduler>();
  if (name == "polynomial") return std::make_shared<PolynomialScheduler>(o.exponent);
  if (name == "vp") return std::make_shared<VPScheduler>(o.beta_min, o.beta_max);
  if (name == "cosine") return std::make_shared<CosineScheduler>();
  throw flowkit::Error("unknown scheduler '" + name + "' (condot, polynomial, vp, cosine)");
}

// ---- affine path ------------------------------------------------------------------------

torch::Tensor broadcast_time(const torch::Tensor& t, const torch::Tensor& like) {
  torch::Tensor tt = t.to(like.device(), like.scalar_type());
  if (tt.dim() == 0) return tt;
  if (tt.dim() != 1 || (like.dim() > 0 && tt.size(0) != like.size(0) && tt.size(0) != 1))
    throw flowkit::Error("time tensor of shape " + c10::str(tt.sizes()) + " does not match a batch of shape " +
                         c10::str(like.sizes()));
  std::vector<int64_t> shape(static_cast<size_t>(std::max<int64_t>(like.dim(), 1)), 1);
  shape[0] = tt.size(0);
  return tt.reshape(shape);
}

AffinePath::AffinePath(std::shared_ptr<const Scheduler> scheduler) : scheduler_(std::move(scheduler)) {}

SchedulerOutput AffinePath::coefficients(const torch::Tensor& t, const torch::Tensor& like) const {
  return (*scheduler_)(broadcast_time(t, like));
}

flowkit::PathSample AffinePath::sample(const torch::Tensor& x0, const torch::Tensor& x1, const torch::Tensor& t) const {
  if (t.dim() != 1 || t.size(0) != x1.size(0) || x0.sizes() != x1.sizes())
    throw flowkit::Error("affine path: expected x0, x1 of equal shape [B, ...] and t of shape [B]; got " +
                         c10::str(x0.sizes()) + ", " + c10::str(x1.sizes()) + ", " + c10::str(t.sizes()));
  SchedulerOutput c = coefficients(t, x1);
  flowkit::PathSample out;
  out.t = t;
  out.x0 = x0;
  out.x1 = x1;
  out.xt = c.alpha * x1 + c.sigma * x0;
  out.dxt = c.d_alpha * x1 + c.d_sigma * x0;
  return out;
}

torch::Tensor AffinePath::prior(int64_t n, const std::vector<int64_t>& item_shape, torch::Generator& gen,
                                const torch::TensorOptions& options) const {
  std::vector<int64_t> shape{n};
  shape.insert(shape.end(), item_shape.begin(), item_shape.end());
  return flowkit::random::randn(shape, gen, options);
}

torch::Tensor AffinePath::velocity_to_score(const torch::Tensor& v, const torch::Tensor& x,
                                            const torch::Tensor& t) const {
  SchedulerOutput c = coefficients(t, x);
  return (c.alpha * v - c.d_alpha * x) / (c.sigma * (c.d_alpha * c.sigma - c.alpha * c.d_sigma));
}

torch::Tensor AffinePath::target_to_velocity(const torch::Tensor& x1, const torch::Tensor& x,
                                             const torch::Tensor& t) const {
  SchedulerOutput c = coefficients(t, x);
  return (c.d_sigma / c.sigma) * x + (c.d_alpha - c.d_sigma * c.alpha / c.sigma) * x1;
}

torch::Tensor AffinePath::epsilon_to_velocity(const torch::Tensor& eps, const torch::Tensor& x,
                                              const torch::Tensor& t) const {
  SchedulerOutput c = coefficients(t, x);
  return (c.d_alpha / c.alpha) * x + (c.d_sigma - c.d_alpha * c.sigma / c.alpha) * eps;
}

torch::Tensor AffinePath::velocity_to_target(const torch::Tensor& v, const torch::Tensor& x,
                                             const torch::Tensor& t) const {
  SchedulerOutput c = coefficients(t, x);
  return (c.sigma * v - c.d_sigma * x) / (c.sigma * c.d_alpha - c.d_sigma * c.alpha);
}

torch::Tensor AffinePath::velocity_to_epsilon(const torch::Tensor& v, const torch::Tensor& x,
                                              const torch::Tensor& t) const {
  SchedulerOutput c = coefficients(t, x);
  return (c.alpha * v - c.d_alpha * x) / (c.alpha * c.d_sigma - c.d_alpha * c.sigma);
}

torch::Tensor AffinePath::target_to_epsilon(const torch::Tensor& x1, const torch::Tensor& x,
                                            const torch::Tensor& t) const {
  SchedulerOutput c = coefficients(t, x);
  return (x - c.alpha * x1) / c.sigma;
}

torch::Tensor AffinePath::epsilon_to_target(const torch::Tensor& eps, const torch::Tensor& x,
                                            const torch::Tensor& t) const {
  SchedulerOutput c = coefficients(t, x);
  return (x - c.sigma * eps) / c.alpha;
}

std::unique_ptr<flowkit::Component> make_affine_path(const flowkit::Config& cfg, const flowkit::BuildContext&) {
  return std::make_unique<AffinePath>(make_scheduler(scheduler_options(cfg)));
}

}  // namespace standard
