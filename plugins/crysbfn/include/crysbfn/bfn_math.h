// crysbfn/bfn_math.h — the parts of CrysBFN's periodic Bayesian flow that need no network:
// von Mises sampling, the circular Bayesian update, the Bayesian-flow simulation, von Mises
// entropy and the linear-entropy accuracy schedule (notes §1.2–1.4).
#pragma once
#include <torch/torch.h>

#include <string>
#include <utility>
#include <vector>

namespace crysbfn {

// I1(k)/I0(k), the mean resultant length E[cos(y - mu)] of VM(mu, k). Stable for large k.
double mean_resultant_length(double kappa);
// Differential entropy of VM(., k): ln(2 pi I0(k)) - k I1(k)/I0(k) (nats). H(0) = ln 2 pi.
double von_mises_entropy(double kappa);

// Samples VM(loc, kappa) elementwise (loc and kappa broadcast) with the Best–Fisher rejection
// sampler, as torch.distributions.VonMises: float64 throughout, kappa clipped to >= 1e-6,
// result wrapped to [-pi, pi). All uniforms come from `gen` (drawn on the generator's
// device, moved to loc's device). Returns float64 on loc's device.
torch::Tensor sample_von_mises(const torch::Tensor& loc, const torch::Tensor& kappa, torch::Generator& gen);

// One conjugate update of a von Mises belief VM(m, c) with an observation y ~ VM(x, alpha):
// c' e^{i m'} = c e^{i m} + alpha e^{i y}. Elementwise; returns (m', c').
std::pair<torch::Tensor, torch::Tensor> circular_update(const torch::Tensor& m, const torch::Tensor& c,
                                                        const torch::Tensor& y, const torch::Tensor& alpha);

// A sample of the Bayesian-flow distribution p_F(theta_k | x): the belief after k sender
// observations y_j ~ VM(x, alpha_j), j = 1..k, from the flat prior (c_0 = 0):
// c_k e^{i m_k} = sum_j alpha_j e^{i y_j}. `k` is int64, broadcastable to x, 0 <= k <= N;
// where k = 0 the belief is the prior: m ~ U[-pi, pi), c = 0. Only max(k) observations are
// drawn (masked per element). Returns (m, c), float64.
std::pair<torch::Tensor, torch::Tensor> circular_flow_sample(const torch::Tensor& x, const torch::Tensor& k,
                                                             const std::vector<double>& alphas,
                                                             torch::Generator& gen);

// The network's accuracy input (norm_beta): (log(c + 1e-7) - log 1e-7) / (log beta1 - log 1e-7).
torch::Tensor normalised_log_accuracy(const torch::Tensor& c, double beta1);

// ---- accuracy schedule ------------------------------------------------------------------
struct AccuracySchedule {
  std::vector<double> alpha;  // sender accuracies alpha_1..alpha_N
  std::vector<double> beta;   // target receiver concentrations beta_1..beta_N (beta_N = beta1)
};

// kappa with H(kappa) = h, for h in (H(huge), ln 2 pi]: bisection on log kappa.
double von_mises_kappa_for_entropy(double h);
// E_{y ~ VM(0, alpha)} |beta_prev + alpha e^{iy}|, by trapezoidal quadrature on the circle
// (spectrally accurate; the official code uses 1e5-sample Monte Carlo).
double expected_concentration(double beta_prev, double alpha);
// CrysBFN's "linear entropy" schedule (linear_acc_search.py): beta_i solves
// H(beta_i) = H(0) + (H(beta1) - H(0)) i / N; alpha_1 = beta_1 and for i >= 2 alpha_i solves
// E|beta_{i-1} + alpha_i e^{iy}| = beta_i (root finding to relative 1e-12).
AccuracySchedule linear_entropy_schedule(int64_t steps, double beta1);
// Reads a reference table (columns i, alpha_i, beta_i with a header line).
AccuracySchedule load_schedule_csv(const std::string& file);
// The same from the table's text; `file` names it in errors.
AccuracySchedule parse_schedule_csv(const std::string& text, const std::string& file);

}  // namespace crysbfn
