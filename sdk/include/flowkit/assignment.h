// flowkit/assignment.h — the minimum-cost perfect assignment of a square cost matrix
// (Hungarian algorithm with potentials, O(n³)): exact W2, crystal site matching, minibatch
// OT couplings all need it, so it is written once (API 3.4).
#pragma once
#include <cstdint>
#include <vector>

namespace flowkit {

// cost: row-major n × n. Returns, for each row, the column assigned to it.
std::vector<int64_t> min_cost_assignment(const std::vector<double>& cost, int64_t n);

}  // namespace flowkit
