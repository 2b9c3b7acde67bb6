// CrysBFN math that needs no network: von Mises sampling and entropy, the circular Bayesian
// update and flow simulation, the linear-entropy accuracy schedule.
#include "crysbfn/bfn_math.h"

#include <algorithm>
#include <cmath>
#include <fstream>
#include <sstream>

#include "flowkit/error.h"
#include "flowkit/random.h"

namespace crysbfn {

// ---- Bessel functions -------------------------------------------------------------------

// e^{-x} I_nu(x) for nu in {0, 1}, x >= 0: std::cyl_bessel_i below 500, the asymptotic
// series (8 terms; relative error < 1e-15 there) above.
static double bessel_ie(int nu, double x) {
  if (x < 500) return std::cyl_bessel_i(static_cast<double>(nu), x) * std::exp(-x);
  const double mu = 4.0 * nu * nu;
  double term = 1, sum = 1;
  for (int k = 1; k <= 8; ++k) {
    term *= -(mu - (2.0 * k - 1) * (2.0 * k - 1)) / (k * 8.0 * x);
    sum += term;
  }
  return sum / std::sqrt(2 * M_PI * x);
}

double mean_resultant_length(double kappa) {
  if (kappa <= 0) return 0;
  return bessel_ie(1, kappa) / bessel_ie(0, kappa);
}

double von_mises_entropy(double kappa) {
  if (kappa <= 0) return std::log(2 * M_PI);
  return std::log(2 * M_PI) + std::log(bessel_ie(0, kappa)) + kappa - kappa * mean_resultant_length(kappa);
}

// ---- sampling ---------------------------------------------------------------------------

torch::Tensor sample_von_mises(const torch::Tensor& loc_in, const torch::Tensor& kappa_in, torch::Generator& gen) {
  const auto gdev = gen.device();
  auto opts = torch::TensorOptions().dtype(torch::kDouble).device(gdev);
  std::vector<int64_t> shape = torch::infer_size(loc_in.sizes(), kappa_in.sizes());
  torch::Tensor loc = loc_in.to(opts).expand(shape);
  torch::Tensor k = kappa_in.to(opts).expand(shape).clamp_min(1e-6).contiguous();
  torch::Tensor tau = 1 + torch::sqrt(1 + 4 * k * k);
  torch::Tensor rho = (tau - torch::sqrt(2 * tau)) / (2 * k);
  torch::Tensor r = torch::where(k < 1e-5, 1 / k + k, (1 + rho * rho) / (2 * rho));
  torch::Tensor x = torch::zeros(shape, opts);
  torch::Tensor done = torch::zeros(shape, opts.dtype(torch::kBool));
  std::vector<int64_t> ushape{3};
  ushape.insert(ushape.end(), shape.begin(), shape.end());
  for (int iter = 0; !done.all().item<bool>(); ++iter) {
    if (iter > 10000) throw flowkit::Error("von Mises sampler did not converge (non-finite concentration?)");
    torch::Tensor u = flowkit::random::rand(ushape, gen, opts);
    torch::Tensor u1 = u[0], u2 = u[1], u3 = u[2];
    torch::Tensor z = torch::cos(M_PI * u1);
    torch::Tensor f = (1 + r * z) / (r + z);
    torch::Tensor c = k * (r - f);
    torch::Tensor accept = ((c * (2 - c) - u2) > 0) | ((c / u2).log() + 1 - c >= 0);
    accept = accept & ~done;
    x = torch::where(accept, torch::sign(u3 - 0.5) * torch::acos(f.clamp(-1, 1)), x);
    done = done | accept;
  }
  torch::Tensor out = torch::remainder(x + M_PI + loc, 2 * M_PI) - M_PI;
  return out.to(loc_in.device());
}

std::pair<torch::Tensor, torch::Tensor> circular_update(const torch::Tensor& m, const torch::Tensor& c,
                                                        const torch::Tensor& y, const torch::Tensor& alpha) {
  torch::Tensor m_new = torch::atan2(alpha * torch::sin(y) + c * torch::sin(m), alpha * torch::cos(y) + c * torch::cos(m));
  torch::Tensor c_new = torch::sqrt((alpha * alpha + c * c + 2 * alpha * c * torch::cos(y - m)).clamp_min(0));
  return {m_new, c_new};
}

std::pair<torch::Tensor, torch::Tensor> circular_flow_sample(const torch::Tensor& x_in, const torch::Tensor& k_in,
                                                             const std::vector<double>& alphas,
                                                             torch::Generator& gen) {
  auto opts = torch::TensorOptions().dtype(torch::kDouble).device(x_in.device());
  torch::Tensor x = x_in.to(opts);
  torch::Tensor k = k_in.to(x.device(), torch::kLong).expand(x.sizes());
  const int64_t K = x.numel() ? k.max().item<int64_t>() : 0;
  if (x.numel() && k.min().item<int64_t>() < 0) throw flowkit::Error("circular_flow_sample: negative step index");
  if (K > static_cast<int64_t>(alphas.size()))
    throw flowkit::Error("circular_flow_sample: step index " + std::to_string(K) + " beyond the schedule's " +
                         std::to_string(alphas.size()) + " steps");
  // Prior mean m_0 ~ U[-pi, pi) (drawn on the generator's device).
  torch::Tensor m0 = flowkit::random::rand(x.sizes(), gen, opts) * (2 * M_PI) - M_PI;
  torch::Tensor s_cos = torch::zeros_like(x), s_sin = torch::zeros_like(x);
  if (K > 0) {
    std::vector<int64_t> view(static_cast<size_t>(x.dim()) + 1, 1);
    view[0] = K;
    torch::Tensor a = torch::tensor(std::vector<double>(alphas.begin(), alphas.begin() + K), opts).view(view);
    torch::Tensor y = sample_von_mises(x.unsqueeze(0), a, gen);  // [K, ...]
    torch::Tensor j = torch::arange(1, K + 1, opts.dtype(torch::kLong)).view(view);
    torch::Tensor used = (j <= k.unsqueeze(0)).to(torch::kDouble);
    s_cos = (used * a * torch::cos(y)).sum(0);
    s_sin = (used * a * torch::sin(y)).sum(0);
  }
  torch::Tensor c = torch::sqrt(s_cos * s_cos + s_sin * s_sin);
  torch::Tensor m = torch::where(k == 0, m0, torch::atan2(s_sin, s_cos));
  return {m, c};
}

torch::Tensor normalised_log_accuracy(const torch::Tensor& c, double beta1) {
  const double lo = std::log(1e-7);
  return (torch::log(c + 1e-7) - lo) / (std::log(beta1) - lo);
}

// ---- schedule ---------------------------------------------------------------------------

double von_mises_kappa_for_entropy(double h) {
  if (h >= std::log(2 * M_PI)) return 0;
  double lo = -25, hi = 35;  // log kappa
  for (int i = 0; i < 200 && hi - lo > 1e-15; ++i) {
    double mid = 0.5 * (lo + hi);
    if (von_mises_entropy(std::exp(mid)) > h) lo = mid;  // entropy decreases with kappa
    else hi = mid;
  }
  return std::exp(0.5 * (lo + hi));
}

double expected_concentration(double beta_prev, double alpha) {
  if (alpha <= 0) return beta_prev;
  // Trapezoidal rule on the circle: exact to rounding for analytic periodic integrands once
  // the grid resolves the VM width 1/sqrt(alpha) and the |beta - alpha| feature at y = pi.
  // Grid size: resolve the VM width 1/sqrt(alpha) and, while the weight near y = pi is not
  // negligible (alpha <= 20), the feature of width |alpha - beta| / sqrt(alpha beta) there.
  constexpr int kMinLog = 10, kMaxLog = 16;
  static const std::vector<std::vector<double>> tables = [] {
    std::vector<std::vector<double>> t;
    for (int l = kMinLog; l <= kMaxLog; ++l) {
      const int m = 1 << l;
      std::vector<double> c(m);
      for (int i = 0; i < m; ++i) c[i] = std::cos(-M_PI + 2 * M_PI * i / m);
      t.push_back(std::move(c));
    }
    return t;
  }();
  double need = 16 * M_PI * std::sqrt(alpha);
  if (alpha <= 20) {
    const double w = std::abs(alpha - beta_prev) / std::sqrt(alpha * beta_prev + 1e-300);
    need = std::max(need, 64 * M_PI / std::max(w, 1e-3));
  }
  int level = kMinLog;
  while (level < kMaxLog && double(1 << level) < need) ++level;
  const std::vector<double>& cos_table = tables[level - kMinLog];
  const int M = static_cast<int>(cos_table.size());
  const double norm = 1.0 / (M * bessel_ie(0, alpha));  // (2 pi / M) / (2 pi e^{-alpha} I0(alpha))
  double sum = 0;
  for (int i = 0; i < M; ++i) {
    const double e = alpha * (cos_table[i] - 1);
    if (e < -60) continue;
    sum += std::exp(e) * std::sqrt(std::max(0.0, beta_prev * beta_prev + alpha * alpha + 2 * alpha * beta_prev * cos_table[i]));
  }
  return sum * norm;
}

AccuracySchedule linear_entropy_schedule(int64_t steps, double beta1) {
  if (steps < 1) throw flowkit::Error("linear_entropy_schedule: steps must be >= 1");
  if (!(beta1 > 0)) throw flowkit::Error("linear_entropy_schedule: beta1 must be > 0");
  AccuracySchedule s;
  const double h0 = std::log(2 * M_PI), h1 = von_mises_entropy(beta1);
  for (int64_t i = 1; i <= steps; ++i)
    s.beta.push_back(i == steps ? beta1 : von_mises_kappa_for_entropy(h0 + (h1 - h0) * double(i) / double(steps)));
  s.alpha.push_back(s.beta[0]);
  for (int64_t i = 1; i < steps; ++i) {
    const double prev = s.beta[i - 1], target = s.beta[i];
    auto f = [&](double a) { return expected_concentration(prev, a) - target; };
    // E >= beta_prev + alpha A(alpha) and E >= alpha - beta_prev bracket the root.
    double lo = std::max(0.0, target - prev), hi = target + prev;
    double flo = f(lo), fhi = f(hi);
    int side = 0;
    for (int it = 0; it < 300 && hi - lo > 1e-13 * hi; ++it) {
      // Illinois false position, falling back to bisection when it stalls.
      double mid = (flo != fhi) ? (lo * fhi - hi * flo) / (fhi - flo) : 0.5 * (lo + hi);
      if (!(mid > lo && mid < hi) || it % 8 == 7) mid = 0.5 * (lo + hi);
      double fm = f(mid);
      if (fm == 0) {
        lo = hi = mid;
        break;
      }
      if ((fm < 0) == (flo < 0)) {
        lo = mid, flo = fm;
        if (side == -1) fhi /= 2;
        side = -1;
      } else {
        hi = mid, fhi = fm;
        if (side == 1) flo /= 2;
        side = 1;
      }
    }
    s.alpha.push_back(0.5 * (lo + hi));
  }
  return s;
}

AccuracySchedule load_schedule_csv(const std::string& file) {
  std::ifstream in(file, std::ios::binary);
  if (!in) throw flowkit::Error("cannot open schedule table '" + file + "'");
  std::stringstream text;
  text << in.rdbuf();
  return parse_schedule_csv(text.str(), file);
}

AccuracySchedule parse_schedule_csv(const std::string& text, const std::string& file) {
  std::stringstream in(text);
  AccuracySchedule s;
  std::string line;
  int64_t lineno = 0;
  while (std::getline(in, line)) {
    ++lineno;
    if (lineno == 1 || line.empty()) continue;  // header
    std::stringstream ss(line);
    std::string a, b, c;
    if (!std::getline(ss, a, ',') || !std::getline(ss, b, ',') || !std::getline(ss, c, ','))
      throw flowkit::Error("'" + file + "' line " + std::to_string(lineno) + ": expected i,alpha,beta");
    try {
      s.alpha.push_back(std::stod(b));
      s.beta.push_back(std::stod(c));
    } catch (const std::exception&) {
      throw flowkit::Error("'" + file + "' line " + std::to_string(lineno) + ": not a number");
    }
  }
  return s;
}

}  // namespace crysbfn
