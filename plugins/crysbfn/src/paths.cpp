// The crystal paths: CrysBFN's Bayesian flow and the DiffCSP-style diffusion.
#include "crysbfn/paths.h"

#include <cmath>

#include "flowkit/error.h"
#include "flowkit/random.h"

namespace crysbfn {

namespace {
// Broadcast a per-row [B] tensor against x [B, ...].
torch::Tensor rows_like(const torch::Tensor& v, const torch::Tensor& x) {
  std::vector<int64_t> shape(static_cast<size_t>(x.dim()), 1);
  shape[0] = -1;
  return v.reshape(shape).to(x.dtype());
}
}  // namespace

// ---- BayesianFlow ---------------------------------------------------------------------------

BayesianFlowSchedule::~BayesianFlowSchedule() = default;
DiffusionSchedule::~DiffusionSchedule() = default;

BayesianFlow::BayesianFlow(BayesianFlowOptions o) : o_(std::move(o)) {
  schedule_ = o_.schedule_file.empty() ? linear_entropy_schedule(o_.steps, o_.beta1) : load_schedule_csv(o_.schedule_file);
  if (static_cast<int64_t>(schedule_.alpha.size()) != o_.steps)
    throw flowkit::Error("schedule table '" + o_.schedule_file + "' has " + std::to_string(schedule_.alpha.size()) +
                         " steps, the flow has " + std::to_string(o_.steps));
  std::vector<double> w(static_cast<size_t>(o_.steps + 1), 0.0);
  for (int64_t i = 1; i <= o_.steps; ++i) {
    const double a = schedule_.alpha[static_cast<size_t>(i - 1)];
    w[static_cast<size_t>(i)] = static_cast<double>(o_.steps) * a * mean_resultant_length(a);
  }
  circular_weight_ = torch::tensor(w, torch::kDouble);
}

torch::Tensor BayesianFlow::gamma(const torch::Tensor& t) const { return 1 - torch::pow(o_.sigma1, 2 * t); }

torch::Tensor BayesianFlow::gaussian_flow(const torch::Tensor& x, const torch::Tensor& t, torch::Generator& gen) const {
  torch::Tensor g = rows_like(gamma(t), x);
  torch::Tensor eps = flowkit::random::randn(x.sizes(), gen, x.options());
  return g * x + torch::sqrt((g * (1 - g)).clamp_min(0)) * eps;
}

torch::Tensor BayesianFlow::gaussian_weight(const torch::Tensor& i) const {
  const double n = static_cast<double>(o_.steps), s = o_.sigma1;
  return n * (1 - std::pow(s, 2.0 / n)) / (2 * torch::pow(s, 2.0 * i.to(torch::kDouble) / n));
}

torch::Tensor BayesianFlow::circular_weight(const torch::Tensor& i) const {
  return circular_weight_.to(i.device()).index_select(0, i.to(torch::kLong).reshape({-1}));
}

torch::Tensor BayesianFlow::euclidean_accuracy_input(const torch::Tensor& t_atoms) const {
  // log precision of the Gaussian belief, log(1/(1-gamma)) = -2 t ln sigma1, normalised by its
  // value at t = 1: simply t.
  return t_atoms.reshape({-1, 1}).expand({-1, 3}).contiguous();
}

torch::Tensor BayesianFlow::type_flow(const torch::Tensor& p, const torch::Tensor& t_atoms, torch::Generator& gen) const {
  const int64_t K = p.size(1);
  torch::Tensor beta = (o_.beta1_type * t_atoms * t_atoms).reshape({-1, 1}).to(p.dtype());
  torch::Tensor y = beta * (K * p - 1) + torch::sqrt(beta * K) * flowkit::random::randn(p.sizes(), gen, p.options());
  return torch::softmax(y, 1);
}

flowkit::PathSample BayesianFlow::sample(const torch::Tensor& x0, const torch::Tensor& x1, const torch::Tensor& t) const {
  torch::Tensor g = rows_like(gamma(t), x1);
  torch::Tensor dg = rows_like(-2 * std::log(o_.sigma1) * (1 - gamma(t)), x1);
  torch::Tensor s = torch::sqrt((g * (1 - g)).clamp_min(1e-30));
  flowkit::PathSample out;
  out.t = t, out.x0 = x0, out.x1 = x1;
  out.xt = g * x1 + s * x0;
  out.dxt = dg * x1 + (1 - 2 * g) * dg / (2 * s) * x0;
  return out;
}

torch::Tensor BayesianFlow::prior(int64_t n, const std::vector<int64_t>& item_shape, torch::Generator&,
                                  const torch::TensorOptions& options) const {
  std::vector<int64_t> shape{n};
  shape.insert(shape.end(), item_shape.begin(), item_shape.end());
  return torch::zeros(shape, options);
}

// ---- WrappedDiffusion -----------------------------------------------------------------------

torch::Tensor WrappedDiffusion::wrapped_normal_score(const torch::Tensor& x, const torch::Tensor& sigma) {
  torch::Tensor k = torch::arange(-10, 11, x.options());
  torch::Tensor shifted = x.unsqueeze(-1) + k;  // [..., 21]
  torch::Tensor s2 = (sigma * sigma).unsqueeze(-1);
  torch::Tensor w = torch::softmax(-shifted * shifted / (2 * s2), -1);
  return -(w * shifted).sum(-1) / (sigma * sigma);
}

WrappedDiffusion::WrappedDiffusion(DiffusionOptions o) : o_(o) {
  const int64_t T = o_.steps;
  auto f = [&](double s) {
    double u = (s / T + o_.cosine_s) / (1 + o_.cosine_s) * M_PI / 2;
    return std::cos(u) * std::cos(u);
  };
  // DDPM cosine schedule as implemented: betas clipped to [1e-4, 0.9999], alpha_bar = cumprod.
  std::vector<double> abar(static_cast<size_t>(T + 1), 1.0), sig(static_cast<size_t>(T + 1), 0.0);
  for (int64_t s = 1; s <= T; ++s) {
    double beta = std::min(0.9999, std::max(1e-4, 1 - f(double(s)) / f(double(s - 1))));
    abar[static_cast<size_t>(s)] = abar[static_cast<size_t>(s - 1)] * (1 - beta);
    double frac = T == 1 ? 1.0 : double(s - 1) / double(T - 1);
    sig[static_cast<size_t>(s)] = std::exp(std::log(o_.sigma_begin) + frac * (std::log(o_.sigma_end) - std::log(o_.sigma_begin)));
  }
  alpha_bar_ = torch::tensor(abar, torch::kDouble);
  sigma_ = torch::tensor(sig, torch::kDouble);
  // E[score^2] under WN(0, sigma^2) by quadrature on one period (the official code uses 1e4
  // Monte Carlo draws); below sigma = 0.08 wrapping is < e^-19 and the value is 1/sigma^2.
  std::vector<double> norm(static_cast<size_t>(T + 1), 0.0);
  const int64_t M = 8192;
  torch::Tensor x = (torch::arange(M, torch::kDouble) + 0.5) / M - 0.5;
  for (int64_t s = 1; s <= T; ++s) {
    double sg = sig[static_cast<size_t>(s)];
    if (sg < 0.08) {
      norm[static_cast<size_t>(s)] = 1 / (sg * sg);
      continue;
    }
    torch::Tensor k = torch::arange(-10, 11, torch::kDouble);
    torch::Tensor p = torch::exp(-(x.unsqueeze(1) + k).pow(2) / (2 * sg * sg)).sum(1);
    torch::Tensor score = wrapped_normal_score(x, torch::full_like(x, sg));
    norm[static_cast<size_t>(s)] = ((p * score * score).sum() / p.sum()).item<double>();
  }
  sigma_norm_ = torch::tensor(norm, torch::kDouble);
}

flowkit::PathSample WrappedDiffusion::sample(const torch::Tensor& x0, const torch::Tensor& x1, const torch::Tensor& t) const {
  const double c = o_.cosine_s, u0 = c / (1 + c) * M_PI / 2, du = -M_PI / (2 * (1 + c));
  torch::Tensor u = rows_like(((1 - t) + c) / (1 + c) * (M_PI / 2), x1);
  torch::Tensor a = torch::cos(u) / std::cos(u0);                       // sqrt(alpha_bar)
  torch::Tensor b = torch::sqrt((1 - a * a).clamp_min(1e-30));          // sqrt(1 - alpha_bar)
  torch::Tensor da = -torch::sin(u) / std::cos(u0) * du;
  flowkit::PathSample out;
  out.t = t, out.x0 = x0, out.x1 = x1;
  out.xt = a * x1 + b * x0;
  out.dxt = da * x1 + (-a * da / b) * x0;
  return out;
}

torch::Tensor WrappedDiffusion::prior(int64_t n, const std::vector<int64_t>& item_shape, torch::Generator& gen,
                                      const torch::TensorOptions& options) const {
  std::vector<int64_t> shape{n};
  shape.insert(shape.end(), item_shape.begin(), item_shape.end());
  return flowkit::random::randn(shape, gen, options);
}

// ---- factories -------------------------------------------------------------------------------

BayesianFlowOptions bayesian_flow_options(const flowkit::Config& cfg) {
  BayesianFlowOptions o;
  o.steps = cfg.get<int64_t>("steps");
  o.beta1 = cfg.get<double>("beta1");
  o.sigma1 = cfg.get<double>("sigma1");
  o.lattice_std = cfg.get<double>("lattice_std");
  o.beta1_type = cfg.get<double>("beta1_type");
  o.periodic = cfg.get<std::string>("coordinates") == "periodic";
  o.schedule_file = cfg.get<std::string>("schedule_file");
  return o;
}

std::unique_ptr<flowkit::Component> make_bayesian_flow(const flowkit::Config& cfg, const flowkit::BuildContext&) {
  BayesianFlowOptions o = bayesian_flow_options(cfg);
  try {
    return std::make_unique<BayesianFlow>(o);
  } catch (const flowkit::Error& e) {
    cfg.fail(o.schedule_file.empty() ? "steps" : "schedule_file", e.what());
  }
}

DiffusionOptions diffusion_options(const flowkit::Config& cfg) {
  DiffusionOptions o;
  o.steps = cfg.get<int64_t>("steps");
  o.sigma_begin = cfg.get<double>("sigma_begin");
  o.sigma_end = cfg.get<double>("sigma_end");
  o.cosine_s = cfg.get<double>("cosine_s");
  if (o.sigma_end <= o.sigma_begin) cfg.fail("sigma_end", "must be larger than sigma_begin");
  return o;
}

std::unique_ptr<flowkit::Component> make_diffusion(const flowkit::Config& cfg, const flowkit::BuildContext&) {
  return std::make_unique<WrappedDiffusion>(diffusion_options(cfg));
}

}  // namespace crysbfn
