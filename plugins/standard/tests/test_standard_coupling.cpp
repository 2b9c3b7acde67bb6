// Minibatch OT couplings (standard/coupling.h) against brute force and closed forms, the CFM
// loss's use of them, and OT-CFM straightening a trained flow end to end.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <algorithm>
#include <fstream>
#include <numeric>

#include "flowkit/core/pipeline.h"
#include "flowkit/core/session.h"
#include "flowkit/error.h"
#include "flowkit/model.h"
#include "standard/cfm_loss.h"
#include "standard/coupling.h"
#include "standard/affine_path.h"
#include "standard/domains.h"
#include "test_util.h"

using namespace standard;

namespace {
torch::Generator make_gen(uint64_t seed) { return at::detail::createCPUGenerator(seed); }
const auto kD = torch::TensorOptions().dtype(torch::kDouble);

double total_cost(const torch::Tensor& cost, const std::vector<int64_t>& col) {
  double s = 0;
  for (size_t i = 0; i < col.size(); ++i) s += cost[static_cast<int64_t>(i)][col[i]].item<double>();
  return s;
}
bool is_permutation(std::vector<int64_t> p) {
  std::sort(p.begin(), p.end());
  for (size_t i = 0; i < p.size(); ++i)
    if (p[i] != static_cast<int64_t>(i)) return false;
  return true;
}
// Rows of a [B, D] tensor in lexicographic order (to compare multisets of rows).
torch::Tensor sorted_rows(const torch::Tensor& x) {
  std::vector<int64_t> idx(x.size(0));
  std::iota(idx.begin(), idx.end(), 0);
  auto a = x.accessor<float, 2>();
  std::sort(idx.begin(), idx.end(), [&](int64_t i, int64_t j) {
    for (int64_t d = 0; d < x.size(1); ++d)
      if (a[i][d] != a[j][d]) return a[i][d] < a[j][d];
    return false;
  });
  return x.index_select(0, torch::tensor(idx, torch::kLong));
}
}  // namespace

// The assignment is optimal: equal to the minimum over all n! permutations, ties included.
TEST(Coupling, AssignmentMatchesBruteForce) {
  auto g = make_gen(0);
  for (int64_t n = 1; n <= 7; ++n)
    for (int trial = 0; trial < 12; ++trial) {
      // Integer costs half the time, so ties occur.
      torch::Tensor cost = trial % 2 ? torch::randint(0, 4, {n, n}, g, kD) : torch::rand({n, n}, g, kD) * 10 - 3;
      std::vector<int64_t> col = min_cost_assignment(cost);
      ASSERT_TRUE(is_permutation(col));
      std::vector<int64_t> p(n);
      std::iota(p.begin(), p.end(), 0);
      double best = 1e300;
      do best = std::min(best, total_cost(cost, p));
      while (std::next_permutation(p.begin(), p.end()));
      EXPECT_NEAR(total_cost(cost, col), best, 1e-9) << "n = " << n << ", trial " << trial;
    }
}

// In one dimension the squared-distance OT plan is the monotone one: the k-th smallest data
// point takes the k-th smallest noise point (a closed form for any n).
TEST(Coupling, AssignmentIsMonotoneInOneDimension) {
  auto g = make_gen(1);
  const int64_t n = 300;
  torch::Tensor a = torch::randn({n}, g, kD) * 2 + 1, b = torch::randn({n}, g, kD);
  std::vector<int64_t> col = min_cost_assignment((a.unsqueeze(1) - b.unsqueeze(0)).pow(2));
  torch::Tensor rank_a = a.argsort().argsort(), rank_b = b.argsort().argsort();
  for (int64_t i = 0; i < n; ++i) ASSERT_EQ(rank_a[i].item<int64_t>(), rank_b[col[i]].item<int64_t>()) << "row " << i;
}

// Sinkhorn's plan has the uniform marginals; large epsilon gives the independent plan, small
// epsilon a permutation whose cost approaches the exact optimum.
TEST(Coupling, SinkhornPlanMarginalsAndLimits) {
  auto g = make_gen(2);
  const int64_t n = 64;
  torch::Tensor a = torch::randn({n, 2}, g, kD), b = torch::randn({n, 2}, g, kD) + 1.5;
  torch::Tensor cost = torch::cdist(a, b).pow(2);
  torch::Tensor plan = sinkhorn_plan(cost, 0.05, 500);
  EXPECT_LT((plan.sum(1) - 1.0 / n).abs().max().item<double>(), 1e-3 / n);
  EXPECT_LT((plan.sum(0) - 1.0 / n).abs().max().item<double>(), 1e-9);  // the last update fits columns exactly
  torch::Tensor flat = sinkhorn_plan(cost, 1e4, 50);
  EXPECT_LT((flat - 1.0 / (n * n)).abs().max().item<double>(), 1e-3 / (n * n));
  const double exact = total_cost(cost, min_cost_assignment(cost));
  std::vector<int64_t> sharp = permutation_from_plan(sinkhorn_plan(cost, 0.002, 2000), g);
  ASSERT_TRUE(is_permutation(sharp));
  EXPECT_LT(total_cost(cost, sharp), 1.02 * exact);
  std::vector<int64_t> loose = permutation_from_plan(flat, g);
  ASSERT_TRUE(is_permutation(loose));
  EXPECT_GT(total_cost(cost, loose), 1.5 * exact);  // an independent draw is far from optimal
}

// Drawn without replacement: the coupled noise is the drawn noise reordered, each row once.
// Between N(0, I₃) and N(2, 0.25 I₃) the independent cost is E|x0 − x1|² = 12 + 3·1.25 = 15.75
// and the OT cost W2² = 12 + 3·(1 − 0.5)² = 12.75 (Gaussian closed form); exact minibatch OT
// on 128 pairs comes close to it, Sinkhorn lies between.
TEST(Coupling, CoupledNoiseIsAPermutationOfTheDrawnNoise) {
  auto g = make_gen(3);
  torch::Tensor x0 = torch::randn({128, 3}, g, torch::kFloat), x1 = torch::randn({128, 3}, g, torch::kFloat) * 0.5 + 2;
  double exact = 0;
  for (const std::string kind : {"exact_ot", "sinkhorn_ot"}) {
    CouplingOptions o{kind, 0.05, 100};
    Coupled c = couple(o, x0, x1, {}, g);
    EXPECT_TRUE(torch::equal(sorted_rows(c.x0), sorted_rows(x0))) << kind;
    EXPECT_NEAR(c.independent_cost, 15.75, 1.5) << kind;
    EXPECT_NEAR(c.coupled_cost, (c.x0 - x1).pow(2).sum(1).mean().item<double>(), 1e-4);
    if (kind == "exact_ot") {
      exact = c.coupled_cost;
      EXPECT_NEAR(exact, 12.75, 0.5);  // a finite batch's optimum sits a little below or above W2²
    } else {
      EXPECT_GT(c.coupled_cost, exact);
      EXPECT_LT(c.coupled_cost, c.independent_cost - 1.0);
    }
  }
}

// Condition-aware: noise is paired only within each label, so the noise a class is trained
// from stays the prior. Pairing across labels (the TorchCFM-style global plan) shifts it
// towards the class.
TEST(Coupling, PairsWithinLabelsKeepEachClassNoiseThePrior) {
  auto g = make_gen(4);
  const int64_t B = 512;
  torch::Tensor label = torch::arange(B, torch::kLong) % 2;
  torch::Tensor x1 = (label.to(torch::kFloat) * 10 - 5).unsqueeze(1).repeat({1, 2});  // classes at (−5,−5), (5,5)
  torch::Tensor x0 = torch::randn({B, 2}, g, torch::kFloat);
  CouplingOptions o{"exact_ot", 0.05, 100};
  Coupled within = couple(o, x0, x1, label, g), global = couple(o, x0, x1, {}, g);
  for (int64_t k = 0; k < 2; ++k) {
    torch::Tensor in = label == k;
    // Within labels, class k gets exactly the noise drawn at its own positions.
    EXPECT_TRUE(torch::equal(sorted_rows(within.x0.index({in})), sorted_rows(x0.index({in}))));
    const double sign = k ? 1 : -1;
    EXPECT_GT(sign * global.x0.index({in}).mean().item<double>(), 0.5);  // biased towards its class
    EXPECT_LT(std::abs(within.x0.index({in}).mean().item<double>()), 0.15);
  }
}

// The loss logs both costs, and refuses to pair across conditions it cannot group by.
TEST(Coupling, CfmLossCouplesWithinTheGroupField) {
  flowkit::BuildContext ctx;
  auto dom = make_digits(resolved_config("standard.digits", {{"file", std::string(PLUGIN_SOURCE_DIR) + "/data/digits.csv.gz"}}), ctx);
  auto& domain = dynamic_cast<flowkit::Domain&>(*dom);
  ctx.domain = &domain;
  auto pth = make_affine_path(resolved_config("standard.affine"), ctx);
  ctx.path = dynamic_cast<const flowkit::Path*>(pth.get());
  auto gen = make_gen(5);
  struct Zero : flowkit::Model {
    torch::nn::Linear lin{1, 1};
    torch::Tensor forward(const torch::Tensor& x, const torch::Tensor&, const flowkit::Conditioning&) override {
      return torch::zeros_like(x);
    }
    torch::nn::Module& module() override { return *lin; }
  } model;
  auto ot = make_cfm(resolved_config("standard.cfm", {{"coupling", "exact_ot"}}), ctx);
  flowkit::LossOutput out = dynamic_cast<flowkit::Loss&>(*ot).compute(model, ctx.path, domain.train_batch(256, gen), gen);
  // 64-D digits paired within labels (groups of ~25): minibatch OT gains ~10 %, not more.
  EXPECT_LT(out.logs.at("coupled_cost"), 0.97 * out.logs.at("independent_cost"));
  auto other = make_cfm(resolved_config("standard.cfm", {{"coupling", "sinkhorn_ot"}, {"coupling_group_by", "cluster"}}), ctx);
  try {
    dynamic_cast<flowkit::Loss&>(*other).compute(model, ctx.path, domain.train_batch(16, gen), gen);
    FAIL() << "pairing across labels was not refused";
  } catch (const flowkit::Error& e) {
    EXPECT_NE(std::string(e.what()).find("\"cluster\""), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("label"), std::string::npos) << e.what();
  }
  auto plain = make_cfm(resolved_config("standard.cfm"), ctx);
  out = dynamic_cast<flowkit::Loss&>(*plain).compute(model, ctx.path, domain.train_batch(16, gen), gen);
  EXPECT_EQ(out.logs.count("coupled_cost"), 0u);
}

// End to end on the 8-Gaussians toy: OT-CFM's learned flow is straighter than independent
// CFM's (eval.straightness_steps), with the same training budget.
TEST(Coupling, OtCfmStraightensTheLearnedFlow) {
  TempDir tmp;
  flowkit::core::PluginHost host(build_tree_only());
  std::ifstream in(std::string(FLOWKIT_SOURCE_DIR) + "/plugins/standard/examples/toy2d.json");
  nlohmann::json doc = nlohmann::json::parse(in);
  doc["train"]["steps"] = 400;
  doc["model"]["hidden"] = 64;
  doc["sample"]["count"] = 500;
  doc["eval"] = {{"reference_count", 500}, {"straightness_steps", 32}, {"metrics", {"energy_distance"}}};
  double relative[2];
  for (int k = 0; k < 2; ++k) {
    doc["loss"]["coupling"] = k ? "exact_ot" : "independent";
    flowkit::core::Pipeline p = resolve_pipeline(doc, host);
    flowkit::core::Session s(p, host, run_in(tmp.path(), k ? "ot" : "independent"));
    s.train();
    relative[k] = s.evaluate().at("straightness_relative").get<double>();
  }
  std::cout << "[ measured ] relative straightness gap: independent " << relative[0] << ", exact OT " << relative[1] << "\n";
  EXPECT_LT(relative[1], 0.5 * relative[0]);
}
