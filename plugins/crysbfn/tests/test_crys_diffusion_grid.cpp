// crysbfn: the few-step diffusion baseline's index grid. With the clipped cosine schedule
// alpha_bar_T ~ 2e-10, so a strided grid that starts at T divides the first lattice estimate's
// eps error by sqrt(alpha_bar_T); DDIM's leading grid never visits T when strided.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cmath>
#include <cstdio>
#include <utility>
#include <vector>

#include "crysbfn/losses_samplers.h"
#include "crysbfn/paths.h"

using namespace crysbfn;

TEST(CrysDiffusionGrid, LeadingGridIsDdimsAndEqualsTheFullGridAtT) {
  EXPECT_EQ(diffusion_grid(1000, 10, true), (std::vector<int64_t>{901, 801, 701, 601, 501, 401, 301, 201, 101, 1, 0}));
  EXPECT_EQ(diffusion_grid(1000, 3, true), (std::vector<int64_t>{667, 334, 1, 0}));  // floor(1000/3) = 333
  EXPECT_EQ(diffusion_grid(1000, 10, false).front(), 1000);
  EXPECT_EQ(diffusion_grid(1000, 10, false)[9], 1);
  for (bool leading : {true, false}) {
    std::vector<int64_t> full = diffusion_grid(1000, 1000, leading);
    for (int64_t k = 0; k < 1000; ++k) ASSERT_EQ(full[static_cast<size_t>(k)], 1000 - k) << leading;
    EXPECT_EQ(full.back(), 0);
  }
}

TEST(CrysDiffusionGrid, StridedLeadingGridAvoidsTheDegenerateEndpoint) {
  DiffusionOptions o;
  o.steps = 1000, o.sigma_begin = 0.005, o.sigma_end = 0.5, o.cosine_s = 0.008;
  WrappedDiffusion flow(o);
  auto abar = [&](int64_t s) { return flow.alpha_bar()[s].item<double>(); };
  EXPECT_LT(abar(1000), 1e-9);  // the clipped endpoint the old grid started from
  // How much an error in the first eps estimate moves the lattice after the first step. The
  // clean estimate L0 = (L - sqrt(1 - ab_s) eps) / sqrt(ab_s) carries it with gain
  // sqrt(1 - ab_s) / sqrt(ab_s); the strided posterior mean takes L0 with weight
  // sqrt(ab_s') (1 - ab_s / ab_s') / (1 - ab_s), DDIM with weight sqrt(ab_s') (and adds
  // sqrt(1 - ab_s') eps, which partly cancels it).
  auto gains = [&](const std::vector<int64_t>& s) {
    const double a = abar(s[0]), b = abar(s[1]);
    const double l0 = std::sqrt(1 - a) / std::sqrt(a);
    return std::pair<double, double>{l0 * std::sqrt(b) * (1 - a / b) / (1 - a), std::abs(l0 * std::sqrt(b) - std::sqrt(1 - b))};
  };
  for (int64_t n : {10, 50, 200}) {
    const auto [old_posterior, old_ddim] = gains(diffusion_grid(1000, n, false));
    const auto [posterior, ddim] = gains(diffusion_grid(1000, n, true));
    std::printf("[crys] first-step eps gain, %lld steps: grid from T: posterior %.3g DDIM %.3g; leading grid: %.3g, %.3g\n",
                static_cast<long long>(n), old_posterior, old_ddim, posterior, ddim);
    EXPECT_GT(old_posterior, 400) << n;  // 1.1e4, 2.0e3, 500: what made the old few-step baseline fail
    EXPECT_LT(posterior, 3) << n;
    EXPECT_LT(ddim, 3) << n;
  }
}
