// Representation diagnostics (eval.probe_label) against constructed embeddings, and a real
// model's representations (the RepresentationModel capability; conformance checks its models).
#include <gtest/gtest.h>
#include <torch/torch.h>

#include "flowkit/core/diagnostics.h"
#include "flowkit/error.h"

using namespace flowkit::core;

TEST(Diagnostics, EffectiveRankOfConstructedEmbeddings) {
  auto g = at::detail::createCPUGenerator(0);
  torch::Tensor iso = torch::randn({4000, 8}, g, torch::kDouble);
  EXPECT_NEAR(effective_rank(iso), 8.0, 0.2);  // isotropic: all singular values ~equal
  torch::Tensor basis = torch::randn({2, 8}, g, torch::kDouble);
  EXPECT_NEAR(effective_rank(torch::randn({4000, 2}, g, torch::kDouble).mm(basis)), 2.0, 0.3);  // rank 2
  EXPECT_NEAR(effective_rank(torch::randn({100, 1}, g, torch::kDouble).mm(basis.slice(0, 0, 1))), 1.0, 1e-9);
  // Two equal singular values and one 3x larger: exp(H(3/5, 1/5, 1/5)).
  torch::Tensor d = torch::zeros({3000, 3}, torch::kDouble);
  torch::Tensor signs = torch::randint(0, 2, {1000}, g, torch::kDouble) * 2 - 1;
  d.slice(0, 0, 1000).select(1, 0).copy_(3 * signs);
  d.slice(0, 1000, 2000).select(1, 1).copy_(signs);
  d.slice(0, 2000, 3000).select(1, 2).copy_(signs);
  // Centring shifts each column by its (tiny) mean; the closed form holds to ~1e-2.
  const double p[3] = {0.6, 0.2, 0.2};
  double h = 0;
  for (double q : p) h -= q * std::log(q);
  EXPECT_NEAR(effective_rank(d), std::exp(h), 0.02);
}

TEST(Diagnostics, MeanPairwiseDistanceOfConstructedEmbeddings) {
  // Half the rows at 0, half at a: only the 2 (N/2)^2 cross pairs are at distance a.
  const int64_t n = 100;
  torch::Tensor z = torch::zeros({n, 3}, torch::kDouble);
  z.slice(0, n / 2).select(1, 1).fill_(2.5);
  EXPECT_NEAR(mean_pairwise_distance(z), 2.5 * n / (2.0 * (n - 1)), 1e-9);
  EXPECT_NEAR(mean_pairwise_distance(3 * z), 3 * mean_pairwise_distance(z), 1e-9);  // scale-equivariant
  EXPECT_THROW(mean_pairwise_distance(torch::zeros({1, 3})), flowkit::Error);
}

TEST(Diagnostics, LinearProbeSeparatesLinearLabelsAndNotRandomOnes) {
  auto g = at::detail::createCPUGenerator(1);
  torch::Tensor z = torch::randn({3000, 16}, g, torch::kDouble);
  torch::Tensor w = torch::randn({16, 4}, g, torch::kDouble);
  torch::Tensor linear = z.mm(w).argmax(1);  // a linear function of z: a probe gets it right
  EXPECT_GT(linear_probe_accuracy(z, linear), 0.85);
  torch::Tensor random = torch::randint(0, 4, {3000}, g, torch::kLong);
  EXPECT_NEAR(linear_probe_accuracy(z, random), 0.25, 0.05);  // chance
}

// Straightness against closed forms: a constant velocity is straight (0); the rotation
// v = A x (A = ω J) moves x0 ~ N(0, I₂) along arcs with S = (ω² − 2(1 − cos ω)) E|x0|² and
// relative S = ω² / (2(1 − cos ω)) − 1, to Euler's O(1/K).
TEST(Diagnostics, FlowStraightnessOfClosedForms) {
  auto g = at::detail::createCPUGenerator(3);
  torch::Tensor x0 = torch::randn({4000, 2}, g, torch::kDouble);
  torch::Tensor grid = torch::linspace(0, 1, 1001, torch::kDouble);
  Straightness flat = flow_straightness([](const torch::Tensor& x, const torch::Tensor&) {
    return torch::ones_like(x) * torch::tensor({0.5, -2.0}, x.options());
  }, x0, grid);
  EXPECT_NEAR(flat.gap, 0.0, 1e-12);
  for (double w : {0.5, 2.0}) {
    torch::Tensor A = torch::tensor({0.0, -w, w, 0.0}, torch::kDouble).reshape({2, 2});
    Straightness rot = flow_straightness([&](const torch::Tensor& x, const torch::Tensor&) { return x.mm(A.t()); }, x0, grid);
    const double second_moment = x0.pow(2).sum(1).mean().item<double>();
    EXPECT_NEAR(rot.gap, (w * w - 2 * (1 - std::cos(w))) * second_moment, 0.01 * w * w) << "omega " << w;
    EXPECT_NEAR(rot.relative, w * w / (2 * (1 - std::cos(w))) - 1, 0.005 * w * w) << "omega " << w;
  }
  // Reversed time (data to noise, as some paths run) measures the same path.
  Straightness back = flow_straightness([](const torch::Tensor& x, const torch::Tensor&) { return x.flip(1) * torch::tensor({1.0, -1.0}, x.options()); },
                                        x0, torch::linspace(1, 0, 1001, torch::kDouble));
  EXPECT_NEAR(back.relative, 1.0 / (2 * (1 - std::cos(1.0))) - 1, 0.01);
}
