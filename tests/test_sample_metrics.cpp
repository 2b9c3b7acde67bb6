// The SDK's sample-based metrics (flowkit/sample_metrics.h) against closed forms and an
// independent brute-force optimum.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <algorithm>
#include <cmath>
#include <numeric>

#include "flowkit/error.h"
#include "flowkit/sample_metrics.h"

using namespace flowkit::metrics;

namespace {
torch::Generator make_gen(uint64_t seed) { return at::detail::createCPUGenerator(seed); }
const auto kD = torch::TensorOptions().dtype(torch::kDouble);
double mean_abs_normal(double mu, double sd) {  // E|N(mu, sd^2)|
  double Phi = 0.5 * std::erfc(mu / sd / std::sqrt(2.0));  // Phi(-mu/sd)
  return sd * std::sqrt(2 / M_PI) * std::exp(-mu * mu / (2 * sd * sd)) + mu * (1 - 2 * Phi);
}
double rice_mean(double nu, double sd) {  // E|N(nu e, sd^2 I_2)|
  double x = -nu * nu / (2 * sd * sd);
  double L = std::exp(x / 2) * ((1 - x) * std::cyl_bessel_i(0.0, -x / 2) - x * std::cyl_bessel_i(1.0, -x / 2));
  return sd * std::sqrt(M_PI / 2) * L;
}
}  // namespace

TEST(SampleMetrics, EnergyDistanceClosedForms) {
  auto gen = make_gen(5);
  const int64_t n = 3000;
  torch::Tensor a = torch::randn({n, 2}, gen, kD), b = torch::randn({n, 2}, gen, kD);
  EXPECT_NEAR(energy_distance(a, b), 0.0, 0.02);
  // 1-D: N(0,1) vs N(d,1): 2 E|N(d, 2)| - 2 E|N(0, 2)|.
  const double d = 1.0;
  torch::Tensor x = torch::randn({n, 1}, gen, kD), y = torch::randn({n, 1}, gen, kD) + d;
  double expect1 = 2 * mean_abs_normal(d, std::sqrt(2.0)) - 2 * mean_abs_normal(0, std::sqrt(2.0));
  EXPECT_NEAR(expect1, 0.5418, 1e-3);  // hand-computed value of the closed form
  EXPECT_NEAR(energy_distance(x, y), expect1, 0.04);
  // 2-D: |X - Y| is Rice distributed.
  torch::Tensor shift = torch::tensor({1.2, -0.9}, kD);
  double expect2 = 2 * rice_mean(1.5, std::sqrt(2.0)) - 2 * rice_mean(0.0, std::sqrt(2.0));
  EXPECT_NEAR(energy_distance(a, b + shift), expect2, 0.05);
}

TEST(SampleMetrics, MmdSameVersusShifted) {
  auto gen = make_gen(6);
  torch::Tensor a = torch::randn({1000, 2}, gen, kD), b = torch::randn({1000, 2}, gen, kD);
  double same = mmd_rbf(a, b);
  double shifted = mmd_rbf(a, b + 0.5);
  EXPECT_LT(std::abs(same), 0.005);
  EXPECT_GT(shifted, 0.02);
  EXPECT_GT(shifted, 10 * std::abs(same));
  EXPECT_GT(mmd_rbf(a, b + 2.0), shifted);
}

TEST(SampleMetrics, SlicedW2OfShiftedGaussians) {
  auto gen = make_gen(8);
  torch::Tensor a = torch::randn({5000, 2}, gen, kD), b = torch::randn({5000, 2}, gen, kD);
  torch::Tensor d = torch::tensor({1.5, 0.5}, kD);
  // E_u[(u . d)^2] = |d|^2 / 2 for u uniform on the circle.
  EXPECT_NEAR(sliced_w2(a, b + d, 500, gen), d.pow(2).sum().item<double>() / 2, 0.08);
  EXPECT_LT(sliced_w2(a, b, 500, gen), 0.01);
  // Unequal sizes use interpolated quantiles.
  EXPECT_NEAR(sliced_w2(a.slice(0, 0, 4000), b.slice(0, 0, 3000) + d, 500, gen), 1.25, 0.08);
}

TEST(SampleMetrics, ExactW2EqualsBruteForceAssignment) {
  auto gen = make_gen(10);
  for (int trial = 0; trial < 5; ++trial) {
    torch::Tensor a = torch::randn({7, 3}, gen, kD), b = torch::randn({7, 3}, gen, kD) + 0.3 * trial;
    torch::Tensor c = torch::cdist(a, b).pow(2);
    std::vector<int> perm(7);
    std::iota(perm.begin(), perm.end(), 0);
    double best = 1e300;
    do {
      double total = 0;
      for (int i = 0; i < 7; ++i) total += c[i][perm[i]].item<double>();
      best = std::min(best, total);
    } while (std::next_permutation(perm.begin(), perm.end()));
    EXPECT_NEAR(exact_w2(a, b), best / 7, 1e-10);
  }
}

TEST(SampleMetrics, ExactW2OfShiftAndOneDimensionalSort) {
  auto gen = make_gen(11);
  torch::Tensor a = torch::randn({200, 2}, gen, kD);
  torch::Tensor d = torch::tensor({0.7, -1.1}, kD);
  // A translated copy: the identity matching is optimal, cost |d|^2.
  EXPECT_NEAR(exact_w2(a, a + d), d.pow(2).sum().item<double>(), 1e-9);
  // 1-D: the optimum matches sorted samples.
  torch::Tensor x = torch::randn({300, 1}, gen, kD), y = torch::rand({300, 1}, gen, kD) * 3;
  torch::Tensor sx = std::get<0>(x.flatten().sort()), sy = std::get<0>(y.flatten().sort());
  EXPECT_NEAR(exact_w2(x, y), (sx - sy).pow(2).mean().item<double>(), 1e-9);
  EXPECT_THROW(exact_w2(a, a.slice(0, 0, 10)), flowkit::Error);
}
