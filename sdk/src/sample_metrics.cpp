// The sample-based metrics of flowkit/sample_metrics.h (one estimator each).
#include <torch/torch.h>

#include <algorithm>
#include <functional>
#include <limits>
#include <vector>

#include "flowkit/assignment.h"
#include "flowkit/error.h"
#include "flowkit/random.h"
#include "flowkit/sample_metrics.h"

namespace flowkit::metrics {

static torch::Tensor as_rows(const torch::Tensor& x) {
  return x.detach().to(torch::kCPU, torch::kDouble).reshape({x.size(0), -1}).contiguous();
}

// Sum over all (i, j) of fn(|a_i - b_j|), in row chunks to bound memory.
static double pairwise_sum(const torch::Tensor& a, const torch::Tensor& b,
                           const std::function<torch::Tensor(const torch::Tensor&)>& fn) {
  double total = 0;
  const int64_t chunk = 512;
  for (int64_t i = 0; i < a.size(0); i += chunk) {
    torch::Tensor d = torch::cdist(a.slice(0, i, std::min(i + chunk, a.size(0))), b, 2.0, 2 /*no matmul*/);
    total += fn(d).sum().item<double>();
  }
  return total;
}

double energy_distance(const torch::Tensor& x_in, const torch::Tensor& y_in) {
  torch::Tensor x = as_rows(x_in), y = as_rows(y_in);
  const double n = static_cast<double>(x.size(0)), m = static_cast<double>(y.size(0));
  if (n < 2 || m < 2) throw Error("energy_distance needs at least 2 samples on each side");
  auto id = [](const torch::Tensor& d) { return d; };
  double exy = pairwise_sum(x, y, id) / (n * m);
  double exx = pairwise_sum(x, x, id) / (n * (n - 1));  // the zero diagonal drops out
  double eyy = pairwise_sum(y, y, id) / (m * (m - 1));
  return 2 * exy - exx - eyy;
}

double mmd_rbf(const torch::Tensor& x_in, const torch::Tensor& y_in, const std::vector<double>& multipliers) {
  torch::Tensor x = as_rows(x_in), y = as_rows(y_in);
  const double n = static_cast<double>(x.size(0)), m = static_cast<double>(y.size(0));
  if (n < 2 || m < 2) throw Error("mmd_rbf needs at least 2 samples on each side");
  if (multipliers.empty()) throw Error("mmd_rbf needs at least one bandwidth");
  torch::Tensor pooled = torch::cat({x.slice(0, 0, 500), y.slice(0, 0, 500)}, 0);
  torch::Tensor d = torch::cdist(pooled, pooled, 2.0, 2);
  torch::Tensor off = ~torch::eye(pooled.size(0), torch::TensorOptions().dtype(torch::kBool));
  double h = d.masked_select(off).median().item<double>();
  if (!(h > 0)) h = 1.0;
  auto kernel = [&](const torch::Tensor& dist) {
    torch::Tensor d2 = dist.pow(2);
    torch::Tensor k = torch::zeros_like(d2);
    for (double mult : multipliers) k += torch::exp(-d2 / (2 * (mult * h) * (mult * h)));
    return k / static_cast<double>(multipliers.size());
  };
  double kxx = (pairwise_sum(x, x, kernel) - n) / (n * (n - 1));  // k(a, a) = 1 on the diagonal
  double kyy = (pairwise_sum(y, y, kernel) - m) / (m * (m - 1));
  double kxy = pairwise_sum(x, y, kernel) / (n * m);
  return kxx + kyy - 2 * kxy;
}

// Sorted columns `s` [n, P] evaluated at K quantile levels (k + 1/2)/K.
static torch::Tensor quantiles(const torch::Tensor& s, int64_t K) {
  const int64_t n = s.size(0);
  if (n == K) return s;
  torch::Tensor pos = ((torch::arange(K, torch::kDouble) + 0.5) / K * n - 0.5).clamp(0, n - 1);
  torch::Tensor lo = pos.floor().to(torch::kLong);
  torch::Tensor hi = (lo + 1).clamp_max(n - 1);
  torch::Tensor w = (pos - lo.to(torch::kDouble)).unsqueeze(1);
  return s.index_select(0, lo) * (1 - w) + s.index_select(0, hi) * w;
}

double sliced_w2(const torch::Tensor& x_in, const torch::Tensor& y_in, int64_t projections, torch::Generator& gen) {
  torch::Tensor x = as_rows(x_in), y = as_rows(y_in);
  if (x.size(1) != y.size(1)) throw Error("sliced_w2: samples of different dimension");
  if (x.size(0) < 1 || y.size(0) < 1 || projections < 1) throw Error("sliced_w2: empty input");
  torch::Tensor u = random::randn({projections, x.size(1)}, gen, torch::TensorOptions().dtype(torch::kDouble));
  u = u / u.norm(2, 1, true);
  torch::Tensor sx = std::get<0>(torch::sort(x.matmul(u.t()), 0));
  torch::Tensor sy = std::get<0>(torch::sort(y.matmul(u.t()), 0));
  const int64_t K = std::min(sx.size(0), sy.size(0));
  return (quantiles(sx, K) - quantiles(sy, K)).pow(2).mean().item<double>();
}

}  // namespace flowkit::metrics

namespace flowkit {

std::vector<int64_t> min_cost_assignment(const std::vector<double>& cost, int64_t n) {
  if (static_cast<int64_t>(cost.size()) != n * n) throw Error("min_cost_assignment: the cost matrix is not n x n");
  const double inf = std::numeric_limits<double>::infinity();
  // Row potentials u, column potentials v; owner[j] is the row matched to column j (1-based;
  // column 0 is the virtual start of each augmenting path).
  std::vector<double> u(n + 1, 0), v(n + 1, 0), slack(n + 1);
  std::vector<int64_t> owner(n + 1, 0), previous(n + 1, 0);
  std::vector<char> visited(n + 1);
  for (int64_t row = 1; row <= n; ++row) {
    owner[0] = row;
    int64_t col = 0;
    std::fill(slack.begin(), slack.end(), inf);
    std::fill(visited.begin(), visited.end(), 0);
    // Grow a shortest-path tree from `row` until it reaches a free column.
    do {
      visited[col] = 1;
      const int64_t r = owner[col];
      double delta = inf;
      int64_t next = 0;
      for (int64_t j = 1; j <= n; ++j) {
        if (visited[j]) continue;
        const double reduced = cost[(r - 1) * n + (j - 1)] - u[r] - v[j];
        if (reduced < slack[j]) slack[j] = reduced, previous[j] = col;
        if (slack[j] < delta) delta = slack[j], next = j;
      }
      for (int64_t j = 0; j <= n; ++j) {
        if (visited[j]) u[owner[j]] += delta, v[j] -= delta;
        else slack[j] -= delta;
      }
      col = next;
    } while (owner[col] != 0);
    // Flip the matching along the path back to the start.
    do {
      const int64_t back = previous[col];
      owner[col] = owner[back];
      col = back;
    } while (col != 0);
  }
  std::vector<int64_t> column_of(n, -1);
  for (int64_t j = 1; j <= n; ++j)
    if (owner[j] > 0) column_of[owner[j] - 1] = j - 1;
  return column_of;
}

}  // namespace flowkit

namespace flowkit::metrics {

double exact_w2(const torch::Tensor& x_in, const torch::Tensor& y_in) {
  torch::Tensor x = as_rows(x_in), y = as_rows(y_in);
  if (x.size(0) != y.size(0)) throw Error("exact_w2 needs equal sample sizes");
  if (x.size(1) != y.size(1)) throw Error("exact_w2: samples of different dimension");
  const int64_t n = x.size(0);
  if (n < 1 || n > 2000) throw Error("exact_w2 needs 1..2000 samples on each side");
  torch::Tensor c = torch::cdist(x, y, 2.0, 2).pow(2).contiguous();
  std::vector<double> cost(c.data_ptr<double>(), c.data_ptr<double>() + n * n);
  const std::vector<int64_t> col = min_cost_assignment(cost, n);
  double total = 0;
  for (int64_t i = 0; i < n; ++i) total += cost[i * n + col[i]];
  return total / static_cast<double>(n);
}

}  // namespace flowkit::metrics
