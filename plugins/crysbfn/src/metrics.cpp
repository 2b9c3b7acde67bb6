// Crystal metrics: lattice reduction, the StructureMatcher port (assignment: flowkit/assignment.h),
// structural/composition validity, density and the 1-D Wasserstein distance.
#include "crysbfn/metrics.h"

#include <algorithm>
#include <cmath>
#include <functional>
#include <limits>
#include <numeric>

#include "flowkit/assignment.h"

namespace crysbfn {

static constexpr double kInf = std::numeric_limits<double>::infinity();

// ---- lattice reduction ------------------------------------------------------------------

static void gram_schmidt(const Mat3& b, Mat3& bs, double mu[3][3], double bb[3]) {
  for (int i = 0; i < 3; ++i) {
    bs[i] = b[i];
    for (int j = 0; j < i; ++j) {
      mu[i][j] = dot(b[i], bs[j]) / bb[j];
      for (int k = 0; k < 3; ++k) bs[i][k] -= mu[i][j] * bs[j][k];
    }
    bb[i] = dot(bs[i], bs[i]);
  }
}

Mat3 lll_reduce(const Mat3& lattice, double delta) {
  Mat3 b = lattice, bs;
  double mu[3][3] = {}, bb[3];
  gram_schmidt(b, bs, mu, bb);
  int k = 1, guard = 0;
  while (k < 3 && ++guard < 10000) {
    for (int j = k - 1; j >= 0; --j) {
      double q = std::round(mu[k][j]);
      if (q != 0) {
        for (int c = 0; c < 3; ++c) b[k][c] -= q * b[j][c];
        gram_schmidt(b, bs, mu, bb);
      }
    }
    if (bb[k] >= (delta - mu[k][k - 1] * mu[k][k - 1]) * bb[k - 1]) {
      ++k;
    } else {
      std::swap(b[k], b[k - 1]);
      gram_schmidt(b, bs, mu, bb);
      k = std::max(k - 1, 1);
    }
  }
  return b;
}

Mat3 niggli_reduce(const Mat3& lattice, double tol) {
  Mat3 B = lll_reduce(lattice);
  const double e = tol * std::cbrt(volume(lattice));
  auto gram = [&](double& A, double& Bv, double& C, double& E, double& N, double& Y) {
    A = dot(B[0], B[0]), Bv = dot(B[1], B[1]), C = dot(B[2], B[2]);
    E = 2 * dot(B[1], B[2]), N = 2 * dot(B[0], B[2]), Y = 2 * dot(B[0], B[1]);
  };
  // G' = M^T G M  <=>  B' = M^T B (rows are basis vectors).
  auto apply = [&](const Mat3& M) { B = matmul(transpose(M), B); };
  double A, Bv, C, E, N, Y;
  for (int iter = 0; iter < 100; ++iter) {
    gram(A, Bv, C, E, N, Y);
    // As pymatgen's get_niggli_reduced_lattice: after A1 the A2 test and the signs l, m, n of
    // A3/A4 still use the values from before A1 (pymatgen recomputes them only after A4), so
    // the result can be a mixed-sign form (e.g. 72°, 69°, 107°) instead of the Niggli cell.
    // The matcher follows it: the basis decides which primitive cell is found first.
    if (Bv + e < A || (std::abs(A - Bv) < e && std::abs(E) > std::abs(N) + e)) {  // A1
      apply({Vec3{0, -1, 0}, Vec3{-1, 0, 0}, Vec3{0, 0, -1}});
    }
    if (C + e < Bv || (std::abs(Bv - C) < e && std::abs(N) > std::abs(Y) + e)) {  // A2
      apply({Vec3{-1, 0, 0}, Vec3{0, 0, -1}, Vec3{0, -1, 0}});
      continue;
    }
    int l = std::abs(E) < e ? 0 : (E > 0 ? 1 : -1);
    int m = std::abs(N) < e ? 0 : (N > 0 ? 1 : -1);
    int n = std::abs(Y) < e ? 0 : (Y > 0 ? 1 : -1);
    if (l * m * n == 1) {  // A3
      double i = l == -1 ? -1 : 1, j = m == -1 ? -1 : 1, k = n == -1 ? -1 : 1;
      apply({Vec3{i, 0, 0}, Vec3{0, j, 0}, Vec3{0, 0, k}});
    } else if (l * m * n == 0 || l * m * n == -1) {  // A4
      double i = l == 1 ? -1 : 1, j = m == 1 ? -1 : 1, k = n == 1 ? -1 : 1;
      if (i * j * k == -1) {
        if (n == 0) k = -1;
        else if (m == 0) j = -1;
        else if (l == 0) i = -1;
      }
      apply({Vec3{i, 0, 0}, Vec3{0, j, 0}, Vec3{0, 0, k}});
    }
    gram(A, Bv, C, E, N, Y);
    if (std::abs(E) > Bv + e || (std::abs(E - Bv) < e && Y - e > 2 * N) || (std::abs(E + Bv) < e && -e > Y)) {  // A5
      apply({Vec3{1, 0, 0}, Vec3{0, 1, -E / std::abs(E)}, Vec3{0, 0, 1}});
      continue;
    }
    if (std::abs(N) > A + e || (std::abs(A - N) < e && Y - e > 2 * E) || (std::abs(A + N) < e && -e > Y)) {  // A6
      apply({Vec3{1, 0, -N / std::abs(N)}, Vec3{0, 1, 0}, Vec3{0, 0, 1}});
      continue;
    }
    if (std::abs(Y) > A + e || (std::abs(A - Y) < e && N - e > 2 * E) || (std::abs(A + Y) < e && -e > N)) {  // A7
      apply({Vec3{1, -Y / std::abs(Y), 0}, Vec3{0, 1, 0}, Vec3{0, 0, 1}});
      continue;
    }
    if (-e > E + N + Y + A + Bv || (std::abs(E + N + Y + A + Bv) < e && e < Y + (A + N) * 2)) {  // A8
      apply({Vec3{1, 0, 1}, Vec3{0, 1, 1}, Vec3{0, 0, 1}});
      continue;
    }
    break;
  }
  if (det(B) < 0)
    for (auto& r : B)
      for (double& v : r) v = -v;
  return B;
}

// ---- helpers ----------------------------------------------------------------------------

static Vec3 wrap(const Vec3& f) {
  Vec3 r;
  for (int k = 0; k < 3; ++k) {
    r[k] = f[k] - std::floor(f[k]);
    if (r[k] >= 1.0) r[k] = 0.0;
  }
  return r;
}

static Vec3 sub(const Vec3& a, const Vec3& b) { return {a[0] - b[0], a[1] - b[1], a[2] - b[2]}; }

// Shortest image of the fractional difference `d` (in the LLL basis `lll`), |v|^2 returned.
static double shortest_image(Vec3 d, const Mat3& lll, Vec3* vec) {
  for (double& x : d) x -= std::round(x);
  double best = kInf;
  for (int i = -1; i <= 1; ++i)
    for (int j = -1; j <= 1; ++j)
      for (int k = -1; k <= 1; ++k) {
        Vec3 c = row_times({d[0] + i, d[1] + j, d[2] + k}, lll);
        double d2 = dot(c, c);
        if (d2 < best) {
          best = d2;
          if (vec) *vec = c;
        }
      }
  return best;
}

// A structure with frac coordinates expressed in a new basis of the same lattice.
static Crystal rebased(const Crystal& c, const Mat3& basis) {
  Crystal r;
  r.id = c.id;
  r.z = c.z;
  r.lattice = basis;
  Mat3 t = matmul(c.lattice, inverse(basis));  // frac_old * L_old * L_new^-1
  for (const auto& f : c.frac) r.frac.push_back(wrap(row_times(f, t)));
  return r;
}

static Mat3 scaled(const Mat3& m, double s) {
  Mat3 r = m;
  for (auto& row : r)
    for (double& v : row) v *= s;
  return r;
}

// ---- primitive cell (pymatgen Structure.get_primitive_structure) -------------------------

// numpy's np.round (half to even); the C code that pymatgen's Cython calls rounds half away.
static double np_round(double x) { return std::nearbyint(x); }

static bool periodic_close(const Vec3& a, const Vec3& b, const Vec3& tol) {
  for (int k = 0; k < 3; ++k) {
    double d = a[k] - b[k];
    if (!(std::abs(d - np_round(d)) < tol[k])) return false;
  }
  return true;
}

// Structure.get_primitive_structure(tolerance) with use_site_props=False and no lattice
// constraint, step for step: sites grouped by species symbol (a stable sort of the symbols),
// candidate translations from the smallest group, every Hermite normal form of determinant
// dividing the gcd of the group sizes (in pymatgen's order), the first that maps every group
// onto itself in cliques of `det` sites, positions averaged over each clique; recursively, then
// Niggli-reduced. Returns the structure unchanged (site order kept) when no smaller cell exists.
static Crystal primitive_structure(const Crystal& s, double tol) {
  const size_t n = s.size();
  std::vector<size_t> order(n);
  std::iota(order.begin(), order.end(), size_t{0});
  std::stable_sort(order.begin(), order.end(),
                   [&](size_t a, size_t b) { return element_symbol(s.z[a]) < element_symbol(s.z[b]); });
  std::vector<std::vector<size_t>> groups;
  for (size_t i : order) {
    if (groups.empty() || element_symbol(s.z[groups.back()[0]]) != element_symbol(s.z[i])) groups.emplace_back();
    groups.back().push_back(i);
  }
  long fu = 0;
  for (const auto& g : groups) fu = std::gcd(fu, static_cast<long>(g.size()));
  if (fu <= 1) return s;  // no supercell matrix of determinant > 1 to try: pymatgen's self.copy()

  const size_t G = groups.size();
  std::vector<std::vector<Vec3>> gf(G);
  for (size_t g = 0; g < G; ++g)
    for (size_t i : groups[g]) gf[g].push_back(s.frac[i]);
  Vec3 super_ftol, super_ftol_2;
  for (int k = 0; k < 3; ++k) super_ftol[k] = tol / norm(s.lattice[k]), super_ftol_2[k] = 2 * super_ftol[k];

  // Approximate periodicities: differences within the smallest group that map every site of
  // every group onto a site of the same group (within twice the tolerance).
  size_t smallest = 0;
  for (size_t g = 1; g < G; ++g)
    if (gf[g].size() < gf[smallest].size()) smallest = g;
  std::vector<Vec3> min_vecs;
  for (const Vec3& f : gf[smallest]) min_vecs.push_back(sub(f, gf[smallest][0]));
  std::vector<size_t> by_size(G);
  std::iota(by_size.begin(), by_size.end(), size_t{0});
  std::stable_sort(by_size.begin(), by_size.end(), [&](size_t a, size_t b) { return gf[a].size() < gf[b].size(); });
  for (size_t g : by_size)
    for (const Vec3& f : gf[g]) {
      std::vector<Vec3> kept;
      for (const Vec3& v : min_vecs)
        for (const Vec3& w : gf[g])
          if (periodic_close(v, sub(w, f), super_ftol_2)) {
            kept.push_back(v);
            break;
          }
      min_vecs.swap(kept);
    }

  // Sites may not be grouped with their neighbours in the supercell.
  std::vector<std::vector<char>> non_nbrs(G);
  for (size_t g = 0; g < G; ++g) {
    const size_t m = gf[g].size();
    non_nbrs[g].assign(m * m, 0);
    for (size_t i = 0; i < m; ++i)
      for (size_t j = 0; j < m; ++j) {
        bool far = i == j;
        for (int k = 0; k < 3 && !far; ++k) {
          double d = gf[g][j][k] - gf[g][i][k];
          far = std::abs(d - np_round(d)) > 2 * super_ftol[k];
        }
        non_nbrs[g][i * m + j] = far;
      }
  }

  auto divisors = [](long v) {
    std::vector<long> r;
    for (long i = 1; i <= v; ++i)
      if (v % i == 0) r.push_back(i);
    return r;
  };
  for (long det_m : divisors(fu)) {
    if (det_m == 1) continue;
    for (long a : divisors(det_m))
      for (long e : divisors(det_m / a)) {
        const long gg = det_m / a / e;
        for (long b = 0; b < a; ++b)
          for (long c = 0; c < a; ++c)
            for (long f = 0; f < e; ++f) {
              const Mat3 m{Vec3{double(a), double(b), double(c)}, Vec3{0.0, double(e), double(f)}, Vec3{0.0, 0.0, double(gg)}};
              const Mat3 inv_m = inverse(m);
              bool lattice_ok = true;
              for (int r = 0; r < 3 && lattice_ok; ++r)
                lattice_ok = std::any_of(min_vecs.begin(), min_vecs.end(),
                                         [&](const Vec3& v) { return periodic_close(inv_m[r], v, super_ftol); });
              if (!lattice_ok) continue;
              const Mat3 new_m = matmul(inv_m, s.lattice);
              Vec3 ftol;
              for (int k = 0; k < 3; ++k) ftol[k] = tol / norm(new_m[k]);
              bool valid = true;
              Crystal p;
              p.id = s.id;
              p.lattice = new_m;
              for (size_t g = 0; g < G && valid; ++g) {
                const size_t cnt = gf[g].size();
                std::vector<Vec3> all_frac(cnt), new_f(cnt);
                for (size_t i = 0; i < cnt; ++i) {
                  all_frac[i] = row_times(gf[g][i], m);
                  for (int k = 0; k < 3; ++k) new_f[i][k] = all_frac[i][k] - std::floor(all_frac[i][k]);
                }
                std::vector<char> grp(cnt * cnt);
                for (size_t i = 0; i < cnt; ++i)
                  for (size_t j = 0; j < cnt; ++j) {
                    bool close = true;
                    for (int k = 0; k < 3 && close; ++k) {
                      double d = all_frac[i][k] - all_frac[j][k];
                      close = std::abs(d - np_round(d)) < ftol[k];
                    }
                    grp[i * cnt + j] = close && non_nbrs[g][i * cnt + j];
                  }
                for (size_t j = 0; j < cnt && valid; ++j) {
                  long col = 0;
                  for (size_t i = 0; i < cnt; ++i) col += grp[i * cnt + j];
                  valid = col == det_m;
                }
                for (size_t i = 0; i < cnt && valid; ++i)
                  for (size_t x = 0; x < cnt && valid; ++x)
                    for (size_t y = 0; y < cnt && valid; ++y)
                      if (grp[i * cnt + x] && grp[i * cnt + y]) valid = grp[x * cnt + y];
                if (!valid) break;
                std::vector<char> added(cnt, 0);
                for (size_t i = 0; i < cnt; ++i) {
                  if (added[i]) continue;
                  std::vector<size_t> members;
                  for (size_t j = 0; j < cnt; ++j)
                    if (grp[i * cnt + j]) added[j] = 1, members.push_back(j);
                  Vec3 coords = new_f[members[0]];
                  for (size_t q = 1; q < members.size(); ++q) {
                    Vec3 offset = sub(new_f[members[q]], coords);
                    for (int k = 0; k < 3; ++k) coords[k] += (offset[k] - np_round(offset[k])) / double(q + 1);
                  }
                  p.z.push_back(s.z[groups[g][members[0]]]);
                  p.frac.push_back(coords);
                }
              }
              if (!valid) continue;
              Crystal q = primitive_structure(p, tol);
              return rebased(q, niggli_reduce(q.lattice));  // .get_reduced_structure()
            }
      }
  }
  return s;
}

// ---- StructureMatcher -------------------------------------------------------------------

MatchResult match_structures(const Crystal& pred_in, const Crystal& ref_in, const MatcherOptions& o) {
  MatchResult res;
  std::string why;
  if (!structure_valid(pred_in, 0.0, 1e-12, &why) || !structure_valid(ref_in, 0.0, 1e-12, &why)) {
    res.reason = "invalid";
    return res;
  }
  // pymatgen _get_reduced_structure: Niggli, then the primitive cell (Niggli-reduced again
  // when smaller). Site counts and compositions are compared after the reduction.
  auto reduced = [&](const Crystal& c) {
    Crystal r = o.niggli ? rebased(c, niggli_reduce(c.lattice)) : c;
    return o.primitive_cell ? primitive_structure(r, 0.25) : r;
  };
  Crystal s1 = reduced(pred_in);
  Crystal s2 = reduced(ref_in);
  if (s1.size() != s2.size()) {
    res.reason = "site_count";
    return res;
  }
  {
    std::vector<int> a = s1.z, b = s2.z;
    std::sort(a.begin(), a.end());
    std::sort(b.begin(), b.end());
    if (a != b) {
      res.reason = "composition";
      return res;
    }
  }
  if (o.scale) {
    const double ratio = std::pow(s2.volume() / s1.volume(), 1.0 / 6.0);
    s1.lattice = scaled(s1.lattice, ratio);
    s2.lattice = scaled(s2.lattice, 1.0 / ratio);
  }
  const int n = static_cast<int>(s1.size());
  std::vector<Vec3> cart1;
  for (const auto& f : s1.frac) cart1.push_back(row_times(f, s1.lattice));

  // mask[i][j] (i: s2 site, j: s1 site) = species differ; anchor = s2 site with most forbidden partners
  // (the first such, as np.argmax). The coarse and LLL tolerance screens below depend on which site
  // is the anchor, so near stol the verdict depends on s2's site order, as in pymatgen: structures
  // read from CIF must come in pymatgen's CifParser order (parse_cif does that) to get its answer.
  std::vector<char> mask(static_cast<size_t>(n) * n);
  int anchor = 0, most = -1;
  for (int i = 0; i < n; ++i) {
    int forbidden = 0;
    for (int j = 0; j < n; ++j) forbidden += (mask[static_cast<size_t>(i) * n + j] = s2.z[i] != s1.z[j]);
    if (forbidden > most) most = forbidden, anchor = i;
  }
  std::vector<int> translations;
  for (int j = 0; j < n; ++j)
    if (!mask[static_cast<size_t>(anchor) * n + j]) translations.push_back(j);

  // Lattice points of s1 within max(|a2|,|b2|,|c2|) (1 + ltol).
  const auto p2 = s2.parameters();
  const double radius = std::max({p2[0], p2[1], p2[2]}) * (1 + o.ltol);
  const Vec3 rl = reciprocal_lengths(s1.lattice);
  const double m0 = std::ceil(radius * rl[0]), m1 = std::ceil(radius * rl[1]), m2 = std::ceil(radius * rl[2]);
  // Checked as doubles before any cast: a flat cell can put these beyond the range of int.
  if (!std::isfinite(m0 + m1 + m2) || (2 * m0 + 1) * (2 * m1 + 1) * (2 * m2 + 1) > 2e7) {
    res.reason = "degenerate_lattice";  // a needle or sheet cell: too many lattice points to enumerate
    return res;
  }
  const int n0 = static_cast<int>(m0), n1 = static_cast<int>(m1), n2 = static_cast<int>(m2);
  struct Point {
    Vec3 frac, cart;
    double len;
  };
  std::vector<Point> cand[3];
  for (int i = -n0; i <= n0; ++i)
    for (int j = -n1; j <= n1; ++j)
      for (int k = -n2; k <= n2; ++k) {
        Vec3 f{double(i), double(j), double(k)};
        Vec3 c = row_times(f, s1.lattice);
        double len = norm(c);
        if (len > radius) continue;
        for (int ax = 0; ax < 3; ++ax) {
          double r = len / p2[ax];
          if (r < 1 + o.ltol && r > 1 / (1 + o.ltol)) cand[ax].push_back({f, c, len});
        }
      }
  auto angle = [](const Point& u, const Point& v) {
    return std::acos(std::clamp(dot(u.cart, v.cart) / (u.len * v.len), -1.0, 1.0)) * 180.0 / M_PI;
  };

  const double stol = o.stol;
  double best = kInf, best_max = 0;
  for (const Point& pa : cand[0])
    for (const Point& pb : cand[1]) {
      if (!(std::abs(angle(pa, pb) - p2[5]) < o.angle_tol)) continue;  // gamma
      for (const Point& pc : cand[2]) {
        if (!(std::abs(angle(pb, pc) - p2[3]) < o.angle_tol)) continue;  // alpha
        if (!(std::abs(angle(pa, pc) - p2[4]) < o.angle_tol)) continue;  // beta
        Mat3 scale_m{pa.frac, pb.frac, pc.frac};
        double dm = det(scale_m);
        if (std::abs(dm) < 1e-8 || std::abs(std::abs(dm) - 1.0) >= 0.5) continue;
        ++res.lattice_mappings;
        Mat3 latt{pa.cart, pb.cart, pc.cart};
        Mat3 latt_inv = inverse(latt);
        std::vector<Vec3> f1;
        for (const auto& c : cart1) f1.push_back(wrap(row_times(c, latt_inv)));
        auto pl = lattice_parameters(latt);
        Mat3 avg = lattice_from_parameters((pl[0] + p2[0]) / 2, (pl[1] + p2[1]) / 2, (pl[2] + p2[2]) / 2,
                                           (pl[3] + p2[3]) / 2, (pl[4] + p2[4]) / 2, (pl[5] + p2[5]) / 2);
        const double normalization = std::cbrt(n / volume(avg));
        Vec3 frac_tol = reciprocal_lengths(avg);  // |b*_k| / (2 pi)
        for (double& t : frac_tol) t = 2 * M_PI * t * stol / (M_PI * normalization);
        Mat3 lll = lll_reduce(avg);
        Mat3 to_lll = matmul(avg, inverse(lll));
        Vec3 lll_tol = reciprocal_lengths(lll);
        for (double& t : lll_tol) t = 2 * M_PI * t * stol / (M_PI * normalization);

        for (int j0 : translations) {
          Vec3 t = sub(f1[j0], s2.frac[anchor]);
          std::vector<Vec3> f2(n);
          for (int i = 0; i < n; ++i) f2[i] = {s2.frac[i][0] + t[0], s2.frac[i][1] + t[1], s2.frac[i][2] + t[2]};
          // Coarse test: every s2 site has a same-species s1 site within frac_tol on every axis.
          bool subset = true;
          for (int i = 0; i < n && subset; ++i) {
            bool found = false;
            for (int j = 0; j < n && !found; ++j) {
              if (mask[static_cast<size_t>(i) * n + j]) continue;
              bool ok = true;
              for (int k = 0; k < 3 && ok; ++k) {
                double d = f1[j][k] - f2[i][k];
                ok = std::abs(d - std::round(d)) <= frac_tol[k];
              }
              found = ok;
            }
            subset = found;
          }
          if (!subset) continue;
          // Fine step: shortest vectors s2 -> s1 in the average lattice, assignment on |v|^2.
          std::vector<double> d2(static_cast<size_t>(n) * n, 1e20);
          std::vector<Vec3> vecs(static_cast<size_t>(n) * n, Vec3{0, 0, 0});
          for (int i = 0; i < n; ++i)
            for (int j = 0; j < n; ++j) {
              if (mask[static_cast<size_t>(i) * n + j]) continue;
              Vec3 dl = row_times(sub(f1[j], f2[i]), to_lll);
              bool within = true;
              for (int k = 0; k < 3; ++k)
                if (std::abs(dl[k] - std::round(dl[k])) > lll_tol[k]) within = false;
              if (!within) continue;
              d2[static_cast<size_t>(i) * n + j] = shortest_image(dl, lll, &vecs[static_cast<size_t>(i) * n + j]);
            }
          const std::vector<int64_t> sol = flowkit::min_cost_assignment(d2, n);
          Vec3 tau{0, 0, 0};
          bool feasible = true;
          for (int i = 0; i < n; ++i) {
            if (d2[static_cast<size_t>(i) * n + sol[i]] >= 1e20) feasible = false;
            for (int k = 0; k < 3; ++k) tau[k] += vecs[static_cast<size_t>(i) * n + sol[i]][k] / n;
          }
          if (!feasible) continue;
          double sum2 = 0, mx = 0;
          for (int i = 0; i < n; ++i) {
            double d = norm(sub(vecs[static_cast<size_t>(i) * n + sol[i]], tau)) * normalization;
            sum2 += d * d;
            mx = std::max(mx, d);
          }
          double val = std::sqrt(sum2 / n);
          if (val < best) best = val, best_max = mx;
          if (val < 1e-5 && val < stol) goto done;
        }
      }
    }
done:
  if (res.lattice_mappings == 0) res.reason = "no_lattice_mapping";
  if (best < stol) {
    res.matched = true;
    res.rms = best;
    res.max_dist = best_max;
    res.reason.clear();
  } else if (res.reason.empty()) {
    res.reason = "stol";
  }
  return res;
}

// ---- validity ---------------------------------------------------------------------------

std::string construction_problem(const Crystal& c) {
  for (const auto& r : c.lattice)
    for (double v : r)
      if (!std::isfinite(v)) return "nan_value";
  for (const auto& f : c.frac)
    for (double v : f)
      if (!std::isfinite(v)) return "nan_value";
  for (const auto& r : c.lattice)
    if (!(norm(r) > 0)) return "non_positive_lattice";
  if (c.z.empty()) return "no_atoms";
  if (c.z.size() != c.frac.size()) return "nan_value";
  for (int z : c.z)
    if (z < 1 || z > kMaxZ) return "unknown_element";
  return "";
}

double min_pair_distance(const Crystal& c) {
  Mat3 lll = lll_reduce(c.lattice);
  Mat3 to_lll = matmul(c.lattice, inverse(lll));
  std::vector<Vec3> f;
  for (const auto& x : c.frac) f.push_back(row_times(x, to_lll));
  double best = kInf;
  for (size_t i = 0; i < f.size(); ++i)
    for (size_t j = i + 1; j < f.size(); ++j) best = std::min(best, shortest_image(sub(f[j], f[i]), lll, nullptr));
  return std::sqrt(best);
}

bool structure_valid(const Crystal& c, double cutoff, double min_volume, std::string* reason) {
  auto fail = [&](const char* r) {
    if (reason) *reason = r;
    return false;
  };
  std::string p = construction_problem(c);
  if (!p.empty()) {
    if (reason) *reason = p;
    return false;
  }
  const double v = c.volume();
  if (!(v >= min_volume) || !(v > 1e-12)) return fail("small_volume");
  if (min_pair_distance(c) < cutoff) return fail("overlapping_atoms");
  if (reason) reason->clear();
  return true;
}

// Python's pauling_test -> eneg_states_test, including its TypeError path (missing
// electronegativity on an oppositely charged pair: the caller treats the test as passed).
static bool pauling_ok(const std::vector<int>& ox, const std::vector<double>& eneg) {
  for (size_t i = 0; i < ox.size(); ++i)
    for (size_t j = i + 1; j < ox.size(); ++j) {
      const bool opposite = (ox[i] > 0 && ox[j] < 0) || (ox[i] < 0 && ox[j] > 0);
      if (!opposite) continue;
      if (std::isnan(eneg[i]) || std::isnan(eneg[j])) return true;
      if (ox[i] > 0 && ox[j] < 0 && eneg[i] >= eneg[j]) return false;
      if (ox[i] < 0 && ox[j] > 0 && eneg[i] <= eneg[j]) return false;
    }
  return true;
}

bool composition_valid(const std::vector<int>& z) {
  if (z.empty()) return false;
  for (int e : z)
    if (e < 1 || e > kMaxZ) return false;
  std::vector<int> elems = z;
  std::sort(elems.begin(), elems.end());
  elems.erase(std::unique(elems.begin(), elems.end()), elems.end());
  if (elems.size() == 1) return true;
  if (std::all_of(elems.begin(), elems.end(), is_smact_metal)) return true;
  std::vector<long> counts;
  for (int e : elems) counts.push_back(static_cast<long>(std::count(z.begin(), z.end(), e)));
  long g = 0;
  for (long c : counts) g = std::gcd(g, c);
  for (long& c : counts) c /= g;
  std::vector<double> eneg;
  for (int e : elems) eneg.push_back(pauling_electronegativity(e));
  const size_t m = elems.size();
  // Bounds of the charge the remaining elements can still contribute (pruning only).
  std::vector<long> lo(m + 1, 0), hi(m + 1, 0);
  for (size_t k = m; k-- > 0;) {
    const auto& ox = oxidation_states(elems[k]);
    if (ox.empty()) return false;  // e.g. noble gases: no combination exists
    lo[k] = lo[k + 1] + counts[k] * *std::min_element(ox.begin(), ox.end());
    hi[k] = hi[k + 1] + counts[k] * *std::max_element(ox.begin(), ox.end());
  }
  std::vector<int> pick(m);
  long budget = 5'000'000;  // leaves visited at most (generated garbage with many elements)
  std::function<bool(size_t, long)> search = [&](size_t k, long charge) -> bool {
    if (k == m) {
      --budget;
      return charge == 0 && pauling_ok(pick, eneg);
    }
    if (charge + lo[k] > 0 || charge + hi[k] < 0 || budget <= 0) return false;
    for (int s : oxidation_states(elems[k])) {
      pick[k] = s;
      if (search(k + 1, charge + counts[k] * s)) return true;
    }
    return false;
  };
  return search(0, 0);
}

double density(const Crystal& c) {
  if (!construction_problem(c).empty() || !(c.volume() > 0)) return std::numeric_limits<double>::quiet_NaN();
  double mass = 0;
  for (int z : c.z) mass += atomic_mass(z);
  return mass / c.volume() * 1.66053906660;  // amu/Å^3 -> g/cm^3
}

int num_elements(const Crystal& c) {
  std::vector<int> z = c.z;
  std::sort(z.begin(), z.end());
  return static_cast<int>(std::unique(z.begin(), z.end()) - z.begin());
}

double wasserstein1(std::vector<double> u, std::vector<double> v) {
  if (u.empty() || v.empty()) return std::numeric_limits<double>::quiet_NaN();
  std::sort(u.begin(), u.end());
  std::sort(v.begin(), v.end());
  std::vector<double> all(u);
  all.insert(all.end(), v.begin(), v.end());
  std::sort(all.begin(), all.end());
  double total = 0;
  for (size_t i = 0; i + 1 < all.size(); ++i) {
    const double x = all[i];
    const double cu = static_cast<double>(std::upper_bound(u.begin(), u.end(), x) - u.begin()) / u.size();
    const double cv = static_cast<double>(std::upper_bound(v.begin(), v.end(), x) - v.begin()) / v.size();
    total += std::abs(cu - cv) * (all[i + 1] - x);
  }
  return total;
}

}  // namespace crysbfn
