// standard/coupling.h — minibatch couplings of noise and data for CFM (OT-CFM, Tong et al.
// 2023; Pooladian et al. 2023): the drawn noise is re-paired with the batch's data so that
// the pairs solve an optimal-transport problem, which straightens the learned flow.
//
// The pairing is always a permutation of the drawn noise (drawn without replacement), so
// every noise and every data item is used exactly once and both marginals stay exact. With
// conditions it pairs only within a group of equal condition: pairing across groups would
// hand each class the noise lying near it, and the noise a class is trained from would no
// longer be the prior it is sampled from.
#pragma once
#include <torch/torch.h>

#include <cstdint>
#include <string>
#include <vector>

namespace standard {

// Exact minimum-cost assignment of an n×n cost tensor (flowkit/assignment.h): column of each row.
std::vector<int64_t> min_cost_assignment(const torch::Tensor& cost);

// Entropic OT plan between uniform marginals (log-domain Sinkhorn): `cost` is divided by its
// mean first, so epsilon is relative to the typical cost. Rows and columns sum to 1/n.
torch::Tensor sinkhorn_plan(const torch::Tensor& cost, double epsilon, int64_t iterations);

// A permutation drawn from a plan without replacement: rows in random order, each taking a
// still free column with probability proportional to its plan entries.
std::vector<int64_t> permutation_from_plan(const torch::Tensor& plan, torch::Generator& gen);

struct CouplingOptions {
  std::string kind;               // independent | exact_ot | sinkhorn_ot
  double sinkhorn_epsilon = 0;    // entropic regularisation relative to the mean cost
  int64_t sinkhorn_iterations = 0;
};

struct Coupled {
  torch::Tensor x0;              // the noise, permuted: (x0[i], x1[i]) is a pair
  double independent_cost = 0;   // mean ||x0 − x1||² of the pairs as drawn
  double coupled_cost = 0;       // ... after pairing
};

// Re-pairs x0 with x1 [B, ...] by squared Euclidean cost; within groups of equal `groups`
// [B] (int64) when defined.
Coupled couple(const CouplingOptions& options, const torch::Tensor& x0, const torch::Tensor& x1,
               const torch::Tensor& groups, torch::Generator& gen);

}  // namespace standard
