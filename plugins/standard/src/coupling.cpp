// Minibatch optimal-transport couplings.
#include <torch/torch.h>

#include <limits>

#include "flowkit/assignment.h"
#include "flowkit/error.h"
#include "flowkit/random.h"
#include "standard/coupling.h"

namespace standard {

std::vector<int64_t> min_cost_assignment(const torch::Tensor& cost) {
  if (cost.dim() != 2 || cost.size(0) != cost.size(1)) throw flowkit::Error("min_cost_assignment: needs a square cost matrix");
  const torch::Tensor c = cost.to(torch::kCPU, torch::kDouble).contiguous();
  return flowkit::min_cost_assignment(std::vector<double>(c.data_ptr<double>(), c.data_ptr<double>() + c.numel()), c.size(0));
}

torch::Tensor sinkhorn_plan(const torch::Tensor& cost, double epsilon, int64_t iterations) {
  if (!(epsilon > 0)) throw flowkit::Error("sinkhorn_plan: epsilon must be positive");
  torch::Tensor c = cost.to(torch::kCPU, torch::kDouble);
  const int64_t n = c.size(0), m = c.size(1);
  const double mean = c.mean().item<double>();
  if (mean > 0) c = c / mean;
  const torch::Tensor scaled = -c / epsilon;
  // Log-domain updates of the dual potentials f, g (stable for small epsilon).
  torch::Tensor f = torch::zeros({n, 1}, c.options()), g = torch::zeros({1, m}, c.options());
  const double log_a = -std::log(static_cast<double>(n)), log_b = -std::log(static_cast<double>(m));
  for (int64_t it = 0; it < iterations; ++it) {
    f = log_a - torch::logsumexp(scaled + g, 1, true);
    g = log_b - torch::logsumexp(scaled + f, 0, true);
  }
  return torch::exp(scaled + f + g);
}

std::vector<int64_t> permutation_from_plan(const torch::Tensor& plan, torch::Generator& gen) {
  const int64_t n = plan.size(0);
  const torch::Tensor p = plan.to(torch::kCPU, torch::kDouble).contiguous();
  const double* w = p.data_ptr<double>();
  const torch::Tensor order_t = flowkit::random::randperm(n, gen).to(torch::kCPU).contiguous();
  const torch::Tensor draws_t = flowkit::random::rand({n}, gen, torch::TensorOptions().dtype(torch::kDouble)).to(torch::kCPU).contiguous();
  const int64_t* order = order_t.data_ptr<int64_t>();
  const double* draws = draws_t.data_ptr<double>();
  std::vector<int64_t> column_of(n, -1);
  std::vector<char> taken(n, 0);
  for (int64_t k = 0; k < n; ++k) {
    const int64_t row = order[k];
    double total = 0;
    for (int64_t j = 0; j < n; ++j)
      if (!taken[j]) total += w[row * n + j];
    int64_t pick = -1;
    if (total > 0) {
      // Inverse CDF over the free columns.
      double target = draws[k] * total, acc = 0;
      for (int64_t j = 0; j < n; ++j) {
        if (taken[j]) continue;
        pick = j;
        acc += w[row * n + j];
        if (acc >= target && w[row * n + j] > 0) break;
      }
    } else {
      // The row's mass is all on taken columns (underflow at tiny epsilon): the first free one.
      for (int64_t j = 0; j < n && pick < 0; ++j)
        if (!taken[j]) pick = j;
    }
    taken[pick] = 1;
    column_of[row] = pick;
  }
  return column_of;
}

namespace {
// Indices into the group (size n) of each member's partner; cost [n, n] of data row vs noise column.
std::vector<int64_t> pair_group(const CouplingOptions& o, const torch::Tensor& cost, torch::Generator& gen) {
  if (o.kind == "exact_ot") return min_cost_assignment(cost);
  return permutation_from_plan(sinkhorn_plan(cost, o.sinkhorn_epsilon, o.sinkhorn_iterations), gen);
}
}  // namespace

Coupled couple(const CouplingOptions& o, const torch::Tensor& x0, const torch::Tensor& x1, const torch::Tensor& groups,
               torch::Generator& gen) {
  Coupled out;
  const int64_t B = x1.size(0);
  out.independent_cost = (x0 - x1).flatten(1).pow(2).sum(1).mean().item<double>();
  if (o.kind == "independent") {
    out.x0 = x0;
    out.coupled_cost = out.independent_cost;
    return out;
  }
  if (o.kind != "exact_ot" && o.kind != "sinkhorn_ot") throw flowkit::Error("unknown coupling \"" + o.kind + "\"");
  torch::NoGradGuard no_grad;
  const torch::Tensor a = x1.flatten(1).to(torch::kCPU, torch::kDouble), b = x0.flatten(1).to(torch::kCPU, torch::kDouble);
  // source[i]: the noise row paired with data row i.
  std::vector<int64_t> source(B);
  std::vector<std::vector<int64_t>> members;
  if (groups.defined()) {
    const torch::Tensor g = groups.to(torch::kCPU, torch::kLong).reshape({B});
    const torch::Tensor values = std::get<0>(at::_unique(g, /*sorted=*/true));
    for (int64_t k = 0; k < values.size(0); ++k) {
      const torch::Tensor idx = torch::nonzero(g == values[k]).reshape({-1});
      members.emplace_back(idx.data_ptr<int64_t>(), idx.data_ptr<int64_t>() + idx.size(0));
    }
  } else {
    members.emplace_back(B);
    for (int64_t i = 0; i < B; ++i) members[0][i] = i;
  }
  for (const auto& m : members) {
    const torch::Tensor idx = torch::tensor(m, torch::kLong);
    const torch::Tensor cost = torch::cdist(a.index_select(0, idx), b.index_select(0, idx)).pow(2);
    const std::vector<int64_t> partner = pair_group(o, cost, gen);
    for (size_t i = 0; i < m.size(); ++i) source[m[i]] = m[partner[i]];
  }
  out.x0 = x0.index_select(0, torch::tensor(source, torch::kLong).to(x0.device()));
  out.coupled_cost = (out.x0 - x1).flatten(1).pow(2).sum(1).mean().item<double>();
  return out;
}

}  // namespace standard
