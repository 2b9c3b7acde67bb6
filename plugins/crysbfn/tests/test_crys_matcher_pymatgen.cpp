// crysbfn, StructureMatcher against pymatgen itself: tests/data/matcher_pymatgen_pairs.json
// holds several hundred (prediction, reference) pairs built from perov-5 crystals and
// pymatgen 2022.11's StructureMatcher(stol=0.5, ltol=0.3, angle_tol=10).get_rms_dist answer
// for each (written once by tests/data/make_matcher_fixture.py). The port must give the same
// match flag on every pair and the same rms and max distance where both match.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <map>
#include <string>

#include "crysbfn/metrics.h"

using namespace crysbfn;

namespace {
const std::string kFixture = std::string(PLUGIN_SOURCE_DIR) + "/tests/data/matcher_pymatgen_pairs.json";

Crystal crystal_of(const nlohmann::json& j) {
  Crystal c;
  const auto lattice = j.at("lattice").get<std::vector<double>>();
  const auto frac = j.at("frac").get<std::vector<double>>();
  c.z = j.at("z").get<std::vector<int>>();
  if (lattice.size() != 9 || frac.size() != 3 * c.z.size()) throw std::runtime_error("malformed structure in the fixture");
  for (int i = 0; i < 3; ++i)
    for (int k = 0; k < 3; ++k) c.lattice[i][k] = lattice[3 * i + k];
  for (size_t i = 0; i < c.z.size(); ++i) c.frac.push_back({frac[3 * i], frac[3 * i + 1], frac[3 * i + 2]});
  return c;
}

struct Tally {
  int pairs = 0, pymatgen = 0, port = 0, agree = 0;
};
}  // namespace

TEST(CrysMatcherPymatgen, AgreesWithPymatgenOnEveryFixturePair) {
  std::ifstream in(kFixture);
  ASSERT_TRUE(in.good()) << "missing " << kFixture;
  const nlohmann::json doc = nlohmann::json::parse(in);
  const auto& m = doc.at("matcher");
  ASSERT_TRUE(m.at("primitive_cell").get<bool>() && m.at("scale").get<bool>() && !m.at("attempt_supercell").get<bool>());
  MatcherOptions options;
  options.stol = m.at("stol").get<double>();
  options.ltol = m.at("ltol").get<double>();
  options.angle_tol = m.at("angle_tol").get<double>();

  const auto& pairs = doc.at("pairs");
  ASSERT_GE(pairs.size(), 300u);
  std::map<std::string, Tally> by_kind;
  Tally all;
  int both = 0, invalid_matched = 0;
  double worst_rms = 0, worst_max = 0;
  const auto t0 = std::chrono::steady_clock::now();
  for (const auto& p : pairs) {
    const std::string kind = p.at("kind").get<std::string>();
    const int id = p.at("id").get<int>();
    const bool expected = p.at("match").get<bool>();
    const MatchResult r = match_structures(crystal_of(p.at("s1")), crystal_of(p.at("s2")), options);
    for (Tally* t : {&by_kind[kind], &all}) {
      ++t->pairs;
      t->pymatgen += expected;
      t->port += r.matched;
      t->agree += expected == r.matched;
    }
    EXPECT_EQ(r.matched, expected) << "pair " << id << " (" << kind << ", " << p.at("source").get<std::string>()
                                   << "): port reason '" << r.reason << "', pymatgen rms "
                                   << (p.at("rms").is_null() ? std::string("null") : std::to_string(p.at("rms").get<double>()));
    if (!(expected && r.matched)) continue;
    ++both;
    if (p.at("s1_min_distance").get<double>() < 0.5) ++invalid_matched;
    const double rms = p.at("rms").get<double>(), max_dist = p.at("max_dist").get<double>();
    const double e_rms = std::abs(r.rms - rms) / std::max(rms, 1e-3);
    const double e_max = std::abs(r.max_dist - max_dist) / std::max(max_dist, 1e-3);
    worst_rms = std::max(worst_rms, e_rms);
    worst_max = std::max(worst_max, e_max);
    EXPECT_LT(e_rms, 1e-6) << "pair " << id << " (" << kind << "): rms " << r.rms << " vs pymatgen " << rms;
    EXPECT_LT(e_max, 1e-6) << "pair " << id << " (" << kind << "): max distance " << r.max_dist << " vs pymatgen " << max_dist;
  }
  const double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
  for (const auto& [kind, t] : by_kind)
    std::printf("[crys] matcher vs pymatgen  %-17s %4d pairs: pymatgen matches %4d, port %4d, flags agree %4d\n", kind.c_str(),
                t.pairs, t.pymatgen, t.port, t.agree);
  std::printf("[crys] matcher vs pymatgen %s: %d pairs, flags agree on %d (pymatgen %d matched, port %d); rms on the %d "
              "matched by both within %.2g (max distance %.2g) relative; %d of them have a prediction closer than 0.5 A "
              "(structurally invalid); %.0f ms\n",
              doc.at("pymatgen_version").get<std::string>().c_str(), all.pairs, all.agree, all.pymatgen, all.port, both, worst_rms,
              worst_max, invalid_matched, ms);
  EXPECT_EQ(all.agree, all.pairs);
  // The fixture exercises both outcomes in every family where both occur.
  EXPECT_GT(all.pymatgen, 100);
  EXPECT_GT(all.pairs - all.pymatgen, 100);
  EXPECT_GT(by_kind["overlapping"].pymatgen, 0);
}
