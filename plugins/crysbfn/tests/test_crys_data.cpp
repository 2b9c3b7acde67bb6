// crysbfn, data side: CIF reader/writer, CDVAE CSV loader, batches, the crystal domain,
// the StructureMatcher port and the validity metrics.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <map>
#include <numeric>
#include <random>

#include "flowkit/assignment.h"
#include <set>

#include "crysbfn/crystal.h"
#include "crysbfn/domain.h"
#include "crysbfn/metrics.h"
#include "flowkit/error.h"
#include "flowkit/registry.h"
#include "test_util.h"

using namespace crysbfn;
namespace fs = std::filesystem;

namespace {

const std::string kPerovDir = std::string(PLUGIN_SOURCE_DIR) + "/data/perov_5/";

// The first row of perov_5/test.csv, verbatim.
const char* kTiOsNOF = R"(# generated using pymatgen
data_TiOsNOF
_symmetry_space_group_name_H-M   'P 1'
_cell_length_a   4.05632160
_cell_length_b   4.05632160
_cell_length_c   4.05632160
_cell_angle_alpha   90.00000000
_cell_angle_beta   90.00000000
_cell_angle_gamma   90.00000000
_symmetry_Int_Tables_number   1
_chemical_formula_structural   TiOsNOF
_chemical_formula_sum   'Ti1 Os1 N1 O1 F1'
_cell_volume   66.74168089
_cell_formula_units_Z   1
loop_
 _symmetry_equiv_pos_site_id
 _symmetry_equiv_pos_as_xyz
  1  'x, y, z'
loop_
 _atom_site_type_symbol
 _atom_site_label
 _atom_site_symmetry_multiplicity
 _atom_site_fract_x
 _atom_site_fract_y
 _atom_site_fract_z
 _atom_site_occupancy
  Ti  Ti0  1  -0.39078906  0.00000000  0.00000000  1
  Os  Os1  1  0.77619935  0.50000000  0.50000000  1
  F  F2  1  0.41528400  0.00000000  0.50000000  1
  N  N3  1  0.74200080  0.50000000  0.00000000  1
  O  O4  1  0.23143281  0.50000000  0.50000000  1
)";

double periodic_diff(double a, double b) {
  double d = a - b;
  return std::abs(d - std::round(d));
}

void expect_same_crystal(const Crystal& a, const Crystal& b, double tol) {
  ASSERT_EQ(a.size(), b.size());
  for (int i = 0; i < 3; ++i)
    for (int j = 0; j < 3; ++j) EXPECT_NEAR(a.lattice[i][j], b.lattice[i][j], tol);
  for (size_t i = 0; i < a.size(); ++i) {
    EXPECT_EQ(a.z[i], b.z[i]);
    for (int k = 0; k < 3; ++k) EXPECT_LT(periodic_diff(a.frac[i][k], b.frac[i][k]), tol);
  }
}

// Ideal cubic perovskite with five distinct species (Sr, Ti at the body centre, F, N, O on faces).
Crystal ideal_perovskite(double a = 4.0) {
  Crystal c;
  c.lattice = lattice_from_parameters(a, a, a, 90, 90, 90);
  c.frac = {{0, 0, 0}, {0.5, 0.5, 0.5}, {0.5, 0.5, 0}, {0.5, 0, 0.5}, {0, 0.5, 0.5}};
  c.z = {38, 22, 9, 7, 8};
  return c;
}

// A triclinic 6-atom crystal without symmetry (well separated atoms).
Crystal triclinic() {
  Crystal c;
  c.lattice = lattice_from_parameters(4.1, 5.3, 6.2, 80, 95, 105);
  c.frac = {{0.05, 0.10, 0.12}, {0.55, 0.35, 0.30}, {0.20, 0.70, 0.55}, {0.80, 0.15, 0.72}, {0.40, 0.85, 0.05}, {0.70, 0.60, 0.90}};
  c.z = {14, 14, 8, 8, 8, 8};
  return c;
}

Crystal transformed(const Crystal& c, const Mat3& unimodular, const Mat3& rotation, const Vec3& shift,
                    const std::vector<int>& perm) {
  // New basis rows B' = U L (then rotated: rows times R^T); frac' = frac U^{-1} + shift.
  Crystal r;
  Mat3 basis = matmul(unimodular, c.lattice);
  r.lattice = matmul(basis, transpose(rotation));
  Mat3 uinv = inverse(unimodular);
  for (int idx : perm) {
    Vec3 f = row_times(c.frac[idx], uinv);
    for (int k = 0; k < 3; ++k) f[k] += shift[k];
    r.frac.push_back(f);
    r.z.push_back(c.z[idx]);
  }
  return r;
}

Mat3 rotation_matrix(double ax, double ay, double az) {
  auto rx = Mat3{Vec3{1, 0, 0}, Vec3{0, std::cos(ax), -std::sin(ax)}, Vec3{0, std::sin(ax), std::cos(ax)}};
  auto ry = Mat3{Vec3{std::cos(ay), 0, std::sin(ay)}, Vec3{0, 1, 0}, Vec3{-std::sin(ay), 0, std::cos(ay)}};
  auto rz = Mat3{Vec3{std::cos(az), -std::sin(az), 0}, Vec3{std::sin(az), std::cos(az), 0}, Vec3{0, 0, 1}};
  return matmul(rz, matmul(ry, rx));
}

const Mat3 kIdentity{Vec3{1, 0, 0}, Vec3{0, 1, 0}, Vec3{0, 0, 1}};

// The perov-5 domain's options: the shipped files plus plugin.json's defaults.
CrystalDomainOptions perov_options() {
  auto cfg = resolved_config("crysbfn.crystal", {{"train_file", kPerovDir + "val.csv.gz"}, {"reference_file", kPerovDir + "test.csv.gz"}});
  return crystal_domain_options(cfg, flowkit::BuildContext{});
}

// The StructureMatcher of the domain's defaults (stol 0.5, ltol 0.3, angle_tol 10).
const MatcherOptions& matcher() {
  static const MatcherOptions m = perov_options().matcher;
  return m;
}

std::vector<Crystal> perov_test(size_t n) {
  auto r = load_cdvae_csv(kPerovDir + "test.csv.gz", false);
  r.crystals.resize(std::min(n, r.crystals.size()));
  return r.crystals;
}

}  // namespace

// ---- CIF ----------------------------------------------------------------------------------

TEST(CrysCif, ReadsPymatgenP1Block) {
  auto cs = parse_cif(kTiOsNOF);
  ASSERT_EQ(cs.size(), 1u);
  const Crystal& c = cs[0];
  EXPECT_EQ(c.id, "TiOsNOF");
  ASSERT_EQ(c.size(), 5u);
  // The file lists Ti Os F N O; pymatgen's CifParser returns the sites by electronegativity.
  EXPECT_EQ(c.z, (std::vector<int>{22, 76, 7, 8, 9}));
  auto p = c.parameters();
  EXPECT_NEAR(p[0], 4.05632160, 1e-12);
  EXPECT_NEAR(p[5], 90.0, 1e-12);
  EXPECT_NEAR(c.volume(), 66.74168089, 1e-6);
  EXPECT_NEAR(c.frac[0][0], 1 - 0.39078906, 1e-12);  // wrapped into [0, 1)
  EXPECT_NEAR(c.frac[4][0], 0.41528400, 1e-12);       // F, the file's third site
  EXPECT_EQ(c.formula(), "TiOsNOF");
  EXPECT_EQ(c.formula_sum(), "Ti1 Os1 N1 O1 F1");     // as the block's own _chemical_formula_sum
}

TEST(CrysCif, SitesComeInPymatgenCifParserOrder) {
  // Structure.from_str(text, fmt="cif") in pymatgen 2022.11.7 returns these sites in this
  // order (checked with /usr/bin/python3): CifParser groups them by species, then
  // get_sorted_structure() sorts by electronegativity (K/Rb and Cu/Re/Si tie: by symbol), a
  // species' sites in read order (rows, then symmetry images). He and Ar have no
  // electronegativity (NaN), which makes Site.__lt__ non-transitive; CPython's list.sort then
  // leaves the second O row behind He. The order matters: the StructureMatcher's anchor site,
  // and with it the verdict near stol, depends on it (CrysMatcher.Perov5PolymorphsAgreeWithPymatgen).
  const char* text = R"(data_order
_cell_length_a 7.0
_cell_length_b 7.5
_cell_length_c 8.0
_cell_angle_alpha 90
_cell_angle_beta 90
_cell_angle_gamma 90
loop_
_symmetry_equiv_pos_as_xyz
'x, y, z'
'x+1/2, y+1/2, z'
loop_
_atom_site_type_symbol
_atom_site_label
_atom_site_fract_x
_atom_site_fract_y
_atom_site_fract_z
O O1 0.10 0.20 0.30
Rb Rb1 0.00 0.00 0.00
Ar Ar1 0.30 0.10 0.70
Si Si1 0.25 0.05 0.50
K K1 0.40 0.15 0.05
Re Re1 0.05 0.40 0.15
F F1 0.15 0.35 0.85
Cu Cu1 0.35 0.30 0.60
He He1 0.20 0.45 0.40
O O2 0.45 0.05 0.90
)";
  auto cs = parse_cif(text);
  ASSERT_EQ(cs.size(), 1u);
  const Crystal& c = cs[0];
  EXPECT_EQ(c.z, (std::vector<int>{18, 18, 19, 19, 37, 37, 29, 29, 75, 75, 14, 14, 8, 8, 8, 9, 9, 2, 2, 8}));
  const std::vector<Vec3> frac{{0.3, 0.1, 0.7},  {0.8, 0.6, 0.7},    {0.4, 0.15, 0.05}, {0.9, 0.65, 0.05},
                               {0.0, 0.0, 0.0},  {0.5, 0.5, 0.0},    {0.35, 0.3, 0.6},  {0.85, 0.8, 0.6},
                               {0.05, 0.4, 0.15}, {0.55, 0.9, 0.15}, {0.25, 0.05, 0.5}, {0.75, 0.55, 0.5},
                               {0.1, 0.2, 0.3},  {0.6, 0.7, 0.3},    {0.45, 0.05, 0.9}, {0.15, 0.35, 0.85},
                               {0.65, 0.85, 0.85}, {0.2, 0.45, 0.4}, {0.7, 0.95, 0.4},  {0.95, 0.55, 0.9}};
  ASSERT_EQ(c.size(), frac.size());
  for (size_t i = 0; i < frac.size(); ++i)
    for (int k = 0; k < 3; ++k) EXPECT_NEAR(c.frac[i][k], frac[i][k], 1e-12) << "site " << i;
}

TEST(CrysCif, SnapsNearThirdsAsPymatgen) {
  // CifParser takes a coordinate within 1e-4 (relative) of 1/3 or 2/3, as written, to be that
  // third (perov-5 test row 2795 has V at 0.66660011); a negative one is wrapped unchanged.
  // pymatgen 2022.11.7 reads Ga (2/3, 1/3, 0.5) and N (0.66661, 0.333, 2/3).
  const char* text = R"(data_thirds
_cell_length_a 5.0
_cell_length_b 5.0
_cell_length_c 6.0
_cell_angle_alpha 90
_cell_angle_beta 90
_cell_angle_gamma 120
loop_
_symmetry_equiv_pos_as_xyz
'x, y, z'
loop_
_atom_site_type_symbol
_atom_site_label
_atom_site_fract_x
_atom_site_fract_y
_atom_site_fract_z
Ga Ga1 0.66660011 0.33336 0.5
N N1 -0.33339 0.3330 0.66671
)";
  auto cs = parse_cif(text);
  ASSERT_EQ(cs.size(), 1u);
  const Crystal& c = cs[0];
  ASSERT_EQ(c.z, (std::vector<int>{31, 7}));
  EXPECT_EQ(c.frac[0][0], 2.0 / 3.0);
  EXPECT_EQ(c.frac[0][1], 1.0 / 3.0);
  EXPECT_EQ(c.frac[0][2], 0.5);
  EXPECT_NEAR(c.frac[1][0], 0.66661, 1e-15);
  EXPECT_EQ(c.frac[1][1], 0.333);
  EXPECT_EQ(c.frac[1][2], 2.0 / 3.0);
}

TEST(CrysCif, ToleratesQuotingLoopsCommentsAndSymmetry) {
  const char* text = R"(# a comment line
data_test   # trailing comment
_cell_length_a 5.0(2)
_cell_length_b '5.0'
_cell_length_c "6.0"
_cell_angle_alpha 90 _cell_angle_beta 90.0
_cell_angle_gamma 120.0
_publ_section_title
;
A text field with 'quotes' and loop_ inside
;
loop_
_space_group_symop_operation_xyz
'x, y, z'
'-x, -y, -z'
'x+1/2, y, z'
loop_
_atom_site_label
_atom_site_fract_x
_atom_site_fract_y
_atom_site_fract_z
Fe1 0.0 0.0 0.0
O2  0.25 0.1(1) 0.3
)";
  auto cs = parse_cif(text);
  ASSERT_EQ(cs.size(), 1u);
  const Crystal& c = cs[0];
  // Fe at 0: images 0, 0, (1/2,0,0) -> 2 distinct; O: 3 distinct images.
  EXPECT_EQ(std::count(c.z.begin(), c.z.end(), 26), 2);
  EXPECT_EQ(std::count(c.z.begin(), c.z.end(), 8), 3);
  auto p = c.parameters();
  EXPECT_NEAR(p[0], 5.0, 1e-12);
  EXPECT_NEAR(p[2], 6.0, 1e-12);
  EXPECT_NEAR(p[5], 120.0, 1e-9);
  // Two blocks in one text.
  std::string two = std::string(kTiOsNOF) + "\n" + kTiOsNOF;
  EXPECT_EQ(parse_cif(two).size(), 2u);
}

TEST(CrysCif, MalformedInputNamesTheField) {
  auto expect_field = [](const std::string& text, const std::string& field, const std::string& part) {
    try {
      parse_cif(text);
      ADD_FAILURE() << "expected a CifError for field " << field;
    } catch (const CifError& e) {
      EXPECT_EQ(e.field(), field) << e.what();
      EXPECT_THAT_MSG(e.what(), part);
    }
  };
  std::string ok = kTiOsNOF;
  auto replace = [&](const std::string& from, const std::string& to) {
    std::string s = ok;
    size_t p = s.find(from);
    EXPECT_NE(p, std::string::npos) << from;
    return s.replace(p, from.size(), to);
  };
  expect_field(replace("_cell_length_a   4.05632160", "_cell_length_a   4.05x"), "_cell_length_a", "cannot parse '4.05x'");
  expect_field(replace("_cell_length_b   4.05632160", ""), "_cell_length_b", "missing");
  expect_field(replace("_cell_angle_beta   90.00000000", "_cell_angle_beta   180"), "_cell_angle_beta", "(0, 180)");
  expect_field(replace("  Os  Os1", "  Qq  Qq1"), "_atom_site_type_symbol", "unknown element 'Qq'");
  expect_field(replace(" _atom_site_fract_y\n", ""), "_atom_site_type_symbol", "not a multiple");
  expect_field(replace("0.41528400", "abc"), "_atom_site_fract_x", "atom_site row 3");
  expect_field(replace("  O  O4  1  0.23143281  0.50000000  0.50000000  1", "  O  O4  1  0.23143281  0.50000000  0.50000000  0.5"),
               "_atom_site_occupancy", "partial occupancy");
  expect_field(replace("'x, y, z'", "'x, y'"), "_symmetry_equiv_pos_as_xyz", "3 components");
  expect_field("_cell_length_a 4\n", "cif", "before any data_ block");
  expect_field("data_x\n_cell_length_a 'open\n", "cif", "unterminated");
}

TEST(CrysCif, WriteReadRoundTripWithin1e6) {
  auto cs = perov_test(400);
  ASSERT_EQ(cs.size(), 400u);
  cs.push_back(triclinic());
  std::string all;
  for (size_t i = 0; i < cs.size(); ++i) all += write_cif_block(cs[i], "c" + std::to_string(i)) + "\n";
  auto back = parse_cif(all);
  ASSERT_EQ(back.size(), cs.size());
  double worst = 0;
  for (size_t i = 0; i < cs.size(); ++i) {
    expect_same_crystal(cs[i], back[i], 1e-6);
    for (int a = 0; a < 3; ++a)
      for (int b = 0; b < 3; ++b) worst = std::max(worst, std::abs(cs[i].lattice[a][b] - back[i].lattice[a][b]));
    for (size_t s = 0; s < cs[i].size(); ++s)
      for (int k = 0; k < 3; ++k) worst = std::max(worst, periodic_diff(cs[i].frac[s][k], back[i].frac[s][k]));
  }
  std::printf("[crys] CIF round trip of %zu crystals: max abs difference %.2e\n", cs.size(), worst);
}

// ---- CSV loader ------------------------------------------------------------------------------

TEST(CrysCsv, LoadsPerov5) {
  auto val = load_cdvae_csv(kPerovDir + "val.csv.gz", false);
  auto test = load_cdvae_csv(kPerovDir + "test.csv.gz", false);
  EXPECT_EQ(val.crystals.size(), 3787u);
  EXPECT_EQ(test.crystals.size(), 3785u);
  EXPECT_EQ(val.skipped + test.skipped, 0);
  std::set<int> elements;
  for (const auto* set : {&val.crystals, &test.crystals})
    for (const auto& c : *set) {
      ASSERT_EQ(c.size(), 5u);
      auto p = c.parameters();
      EXPECT_NEAR(p[0], p[1], 1e-9);
      EXPECT_NEAR(p[3], 90, 1e-6);
      for (int z : c.z) elements.insert(z);
    }
  EXPECT_EQ(elements.size(), 56u);
  EXPECT_EQ(test.crystals[0].id, "3961");
  EXPECT_EQ(test.crystals[0].z, (std::vector<int>{22, 76, 7, 8, 9}));  // pymatgen CifParser order (file: Ti Os F N O)
}

TEST(CrysCsv, MalformedRowIsNamedOrSkipped) {
  TempDir tmp;
  std::string good = kTiOsNOF;
  std::string bad = good;
  bad.replace(bad.find("_cell_length_b   4.05632160"), 27, "_cell_length_b   ?");
  std::string csv = ",material_id,cif,formula\n0,11,\"" + good + "\",TiOsNOF\n1,22,\"" + bad + "\",TiOsNOF\n2,33,\"" + good +
                    "\",\"quoted, with comma\"\n";
  fs::path file = tmp.path() / "bad.csv";
  std::ofstream(file) << csv;
  try {
    load_cdvae_csv(file.string(), false);
    FAIL() << "expected an error";
  } catch (const flowkit::Error& e) {
    EXPECT_THAT_MSG(e.what(), "row 2");
    EXPECT_THAT_MSG(e.what(), "material_id 22");
    EXPECT_THAT_MSG(e.what(), "_cell_length_b");
  }
  auto r = load_cdvae_csv(file.string(), true);
  EXPECT_EQ(r.rows, 3);
  EXPECT_EQ(r.skipped, 1);
  ASSERT_EQ(r.crystals.size(), 2u);
  EXPECT_EQ(r.crystals[1].id, "33");
  ASSERT_EQ(r.errors.size(), 1u);
}

// ---- batches and the domain ---------------------------------------------------------------------

TEST(CrysDomain, BatchLayoutAndRoundTrip) {
  std::vector<Crystal> cs = perov_test(3);
  cs.push_back(triclinic());
  flowkit::Batch b = to_batch(cs);
  EXPECT_EQ(b.at("lattice").sizes(), torch::IntArrayRef({4, 3, 3}));
  EXPECT_EQ(b.at("x").sizes(), torch::IntArrayRef({4, 6}));
  EXPECT_EQ(b.at("frac").sizes(), torch::IntArrayRef({21, 3}));
  EXPECT_EQ(b.at("types").sizes(), torch::IntArrayRef({21}));
  EXPECT_EQ(b.at("batch")[20].item<int64_t>(), 3);
  EXPECT_EQ(b.at("num_atoms")[3].item<int64_t>(), 6);
  auto back = from_batch(b);
  for (size_t i = 0; i < cs.size(); ++i) expect_same_crystal(cs[i], back[i], 1e-5);  // float32 storage
  // Lattice from the parameters "x" when "lattice" is absent.
  b.erase("lattice");
  auto from_x = from_batch(b);
  for (size_t i = 0; i < cs.size(); ++i) EXPECT_NEAR(from_x[i].volume(), cs[i].volume(), 1e-3);
}

TEST(CrysDomain, SamplersMetricsAndWriter) {
  CrystalDomain d(perov_options(), "cpu");
  auto g1 = at::detail::createCPUGenerator(3), g2 = at::detail::createCPUGenerator(3);
  auto a = d.train_batch(32, g1), b = d.train_batch(32, g2);
  EXPECT_TRUE(torch::equal(a.at("frac"), b.at("frac")));
  EXPECT_EQ(a.at("x").sizes(), torch::IntArrayRef({32, 6}));
  auto r1 = d.reference(500, g1), r2 = d.reference(500, g2);
  EXPECT_TRUE(torch::equal(r1.at("frac"), r2.at("frac")));
  auto cond = d.sample_conditions(0, 500, g1);
  EXPECT_TRUE(torch::equal(cond.at("types"), r1.at("types")));

  // The reference against itself: everything matches with RMSE 0.
  auto t0 = std::chrono::steady_clock::now();
  auto m = d.evaluate(r1, r1, d.metric_names(), g1);
  double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  EXPECT_DOUBLE_EQ(m.at("match_rate").get<double>(), 1.0);
  EXPECT_LT(m.at("rmse").get<double>(), 1e-6);
  EXPECT_DOUBLE_EQ(m.at("match_rate_novel").get<double>(), 1.0);
  EXPECT_LT(m.at("lattice_length_error").get<double>(), 1e-6);
  EXPECT_DOUBLE_EQ(m.at("struct_validity").get<double>(), 1.0);
  // Compositions of test[:500] that never occur in val (the notes count 3,050 of all 3,785).
  const int64_t novel = m.at("novel_pairs").get<int64_t>();
  EXPECT_GT(novel, 350);
  EXPECT_LT(novel, 450);
  // The distances use the valid generated crystals only (CDVAE): the 1% composition-invalid
  // reference crystals drop out of the "generated" side, so these are small but not 0.
  EXPECT_LT(m.at("density_w1").get<double>(), 0.05);
  EXPECT_LT(m.at("num_elements_w1").get<double>(), 0.05);
  std::printf("[crys] perov-5 test[:500] vs itself: %s (%.2f s)\n", m.dump().c_str(), secs);

  // Scrambled coordinates (same compositions and lattices): the matcher rejects most of them.
  flowkit::Batch scrambled = r1;
  scrambled.set("frac", torch::rand(r1.at("frac").sizes(), g1));
  auto ms = d.evaluate(scrambled, r1, {"match_rate", "rmse", "struct_validity"}, g1);
  // (stol = 0.5 is lenient for 5-atom cells: random coordinates in the true lattice match
  // about a third of the time, with RMSE near the tolerance.)
  std::printf("[crys] random fractional coordinates vs test[:500]: %s\n", ms.dump().c_str());
  EXPECT_LT(ms.at("match_rate").get<double>(), 0.5);

  // Predictions rigidly shifted and with permuted sites still match.
  std::vector<Crystal> ref = from_batch(r1), moved;
  std::mt19937 rng(7);
  std::uniform_real_distribution<double> u(0, 1);
  for (const auto& c : ref) {
    std::vector<int> perm(c.size());
    std::iota(perm.begin(), perm.end(), 0);
    std::shuffle(perm.begin(), perm.end(), rng);
    moved.push_back(transformed(c, kIdentity, rotation_matrix(u(rng), u(rng), u(rng)), {u(rng), u(rng), u(rng)}, perm));
  }
  auto mm = d.evaluate(to_batch(moved), r1, {"match_rate", "rmse"}, g1);
  EXPECT_DOUBLE_EQ(mm.at("match_rate").get<double>(), 1.0);
  EXPECT_LT(mm.at("rmse").get<double>(), 1e-5);

  TempDir tmp;
  auto files = d.write(r1, tmp.path().string(), "samples");
  ASSERT_EQ(files.size(), 2u);
  std::ifstream in(files[0]);
  std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  auto back = parse_cif(text);
  ASSERT_EQ(back.size(), 500u);
  for (size_t i = 0; i < back.size(); ++i) expect_same_crystal(ref[i], back[i], 1e-5);
  std::ifstream js(files[1]);
  auto summary = nlohmann::json::parse(js);
  EXPECT_EQ(summary.at("crystals").get<int>(), 500);
}

// ---- StructureMatcher -----------------------------------------------------------------------------

TEST(CrysMatcher, NiggliAndLllKeepTheLattice) {
  Mat3 cubic = lattice_from_parameters(4, 4, 4, 90, 90, 90);
  Mat3 skew = matmul(Mat3{Vec3{1, 2, 0}, Vec3{0, 1, 0}, Vec3{3, -1, 1}}, cubic);  // det 1
  for (const Mat3& m : {niggli_reduce(skew), lll_reduce(skew)}) {
    auto p = lattice_parameters(m);
    for (int k = 0; k < 3; ++k) EXPECT_NEAR(p[k], 4.0, 1e-9);
    for (int k = 3; k < 6; ++k) EXPECT_NEAR(p[k], 90.0, 1e-7);
    EXPECT_NEAR(volume(m), 64.0, 1e-9);
  }
  EXPECT_GT(det(niggli_reduce(skew)), 0);
  // A Niggli form is unique: two bases of one triclinic lattice reduce to the same parameters.
  Mat3 l = triclinic().lattice;
  auto p1 = lattice_parameters(niggli_reduce(l));
  auto p2 = lattice_parameters(niggli_reduce(matmul(Mat3{Vec3{1, 1, 0}, Vec3{0, 1, 0}, Vec3{-2, 0, 1}}, l)));
  for (int k = 0; k < 6; ++k) EXPECT_NEAR(p1[k], p2[k], 1e-7) << k;
}

TEST(CrysMatcher, LinearAssignmentIsOptimal) {
  std::mt19937 rng(1);
  std::uniform_real_distribution<double> u(0, 1);
  for (int n = 1; n <= 6; ++n) {
    std::vector<double> cost(static_cast<size_t>(n) * n);
    for (double& c : cost) c = u(rng);
    std::vector<int> perm(n), best_perm;
    std::iota(perm.begin(), perm.end(), 0);
    double best = 1e9;
    do {
      double s = 0;
      for (int i = 0; i < n; ++i) s += cost[static_cast<size_t>(i) * n + perm[i]];
      if (s < best) best = s, best_perm = perm;
    } while (std::next_permutation(perm.begin(), perm.end()));
    auto sol = flowkit::min_cost_assignment(cost, n);
    double s = 0;
    for (int i = 0; i < n; ++i) s += cost[static_cast<size_t>(i) * n + sol[i]];
    EXPECT_NEAR(s, best, 1e-12) << n;
  }
}

TEST(CrysMatcher, InvariantToShiftPermutationRotationAndBasis) {
  const Crystal ref = triclinic();
  ASSERT_TRUE(structure_valid(ref, 0.5, 0.1));
  struct Case {
    const char* name;
    Mat3 unimodular, rotation;
    Vec3 shift;
    std::vector<int> perm;
  };
  const std::vector<int> same{0, 1, 2, 3, 4, 5}, shuffled{3, 5, 0, 2, 1, 4};
  const Mat3 basis{Vec3{1, 1, 0}, Vec3{0, 1, 0}, Vec3{-2, 0, 1}};   // det 1, same lattice
  const Mat3 swap{Vec3{0, 1, 0}, Vec3{1, 0, 0}, Vec3{0, 0, -1}};    // axis relabelling, det 1
  const Mat3 rot = rotation_matrix(0.3, -1.1, 2.0);
  std::vector<Case> cases{{"identity", kIdentity, kIdentity, {0, 0, 0}, same},
                          {"shifted", kIdentity, kIdentity, {0.31, -0.72, 0.05}, same},
                          {"permuted", kIdentity, kIdentity, {0, 0, 0}, shuffled},
                          {"rotated", kIdentity, rot, {0, 0, 0}, same},
                          {"other basis", basis, kIdentity, {0, 0, 0}, same},
                          {"relabelled axes", swap, kIdentity, {0, 0, 0}, same},
                          {"all together", basis, rot, {0.5, 0.25, -0.125}, shuffled}};
  for (const auto& c : cases) {
    SCOPED_TRACE(c.name);
    Crystal pred = transformed(ref, c.unimodular, c.rotation, c.shift, c.perm);
    MatchResult r = match_structures(pred, ref, matcher());
    EXPECT_TRUE(r.matched) << r.reason;
    EXPECT_LT(r.rms, 1e-8);
    EXPECT_GT(r.lattice_mappings, 0);
  }
  // Different composition or site count: no match, with the reason.
  Crystal other = ref;
  other.z[0] = 32;
  EXPECT_EQ(match_structures(other, ref, matcher()).reason, "composition");
  other = ref;
  other.z.pop_back(), other.frac.pop_back();
  EXPECT_EQ(match_structures(other, ref, matcher()).reason, "site_count");
}

TEST(CrysMatcher, SiteToleranceBoundary) {
  // Zero-mean displacements d of 4 of the 5 sites (+-x, +-y): the normalised RMS is
  // d sqrt(4/5) / (V/N)^(1/3); no lattice mapping or translation can lower it.
  const Crystal ref = ideal_perovskite(4.0);
  const double unit = std::cbrt(64.0 / 5.0);
  for (double target : {0.1, 0.3, 0.49, 0.499, 0.501, 0.51}) {
    const double d = target * unit / std::sqrt(0.8) / 4.0;  // fractional
    Crystal pred = ref;
    pred.frac[1][0] += d, pred.frac[2][0] -= d, pred.frac[3][1] += d, pred.frac[4][1] -= d;
    MatchResult r = match_structures(pred, ref, matcher());
    if (target < 0.5) {
      EXPECT_TRUE(r.matched) << target << " " << r.reason;
      EXPECT_NEAR(r.rms, target, 1e-9);
      EXPECT_NEAR(r.max_dist, d * 4.0 / unit, 1e-9);
    } else {
      EXPECT_FALSE(r.matched) << target << " rms " << r.rms;
      EXPECT_EQ(r.reason, "stol");
    }
  }
}

TEST(CrysMatcher, LatticeToleranceBoundary) {
  // One atom: the RMS is 0, so the outcome is decided by the lattice mapping alone.
  Crystal ref;
  ref.lattice = lattice_from_parameters(4, 4, 4, 90, 90, 90);
  ref.frac = {{0, 0, 0}};
  ref.z = {84};
  auto with = [&](double a, double gamma) {
    Crystal c = ref;
    c.lattice = lattice_from_parameters(4 * a, 4, 4, 90, 90, gamma);
    return c;
  };
  // After volume scaling, stretching a by s gives length ratios s^(2/3) and s^(-1/3);
  // ltol = 0.3 allows s < 1.3^1.5 = 1.482.
  EXPECT_TRUE(match_structures(with(1.47, 90), ref, matcher()).matched);
  MatchResult r = match_structures(with(1.50, 90), ref, matcher());
  EXPECT_FALSE(r.matched);
  EXPECT_EQ(r.reason, "no_lattice_mapping");
  // angle_tol = 10 degrees.
  EXPECT_TRUE(match_structures(with(1.0, 99.5), ref, matcher()).matched);
  EXPECT_FALSE(match_structures(with(1.0, 100.5), ref, matcher()).matched);
}

TEST(CrysMatcher, Perov5PolymorphsAgreeWithPymatgen) {
  // Every consecutive pair of test crystals sharing a composition (groups in file order), against
  // pymatgen's own verdict on the same pairs (tests/data/make_polymorph_fixture.py): the same
  // match flag pair by pair, the same RMS where both match. Polymorphs are the hard case for a
  // matcher: same species and counts, different site arrangements or cells. Both sides read the
  // CIFs themselves, so this also checks the reader: pymatgen's verdict near stol depends on the
  // site order (the matcher's anchor site), and 5 of these pairs flip unless the sites come in
  // pymatgen's CifParser order (CrysCif.SitesComeInPymatgenCifParserOrder).
  auto cs = perov_test(3785);
  std::map<std::vector<int>, std::vector<size_t>> by_comp;
  for (size_t i = 0; i < cs.size(); ++i) {
    auto z = cs[i].z;
    std::sort(z.begin(), z.end());
    by_comp[z].push_back(i);
  }
  std::map<std::pair<size_t, size_t>, nlohmann::json> pymatgen;
  {
    std::ifstream in(std::string(PLUGIN_SOURCE_DIR) + "/tests/data/perov5_polymorphs_pymatgen.json");
    ASSERT_TRUE(in) << "fixture missing";
    const nlohmann::json doc = nlohmann::json::parse(in);
    for (const auto& p : doc.at("pairs")) pymatgen[{p.at("a").get<size_t>(), p.at("b").get<size_t>()}] = p;
  }
  int pairs = 0, matched = 0, expected = 0, agree = 0;
  for (const auto& [z, idx] : by_comp)
    for (size_t a = 0; a + 1 < idx.size(); ++a) {
      ++pairs;
      auto it = pymatgen.find({idx[a], idx[a + 1]});
      ASSERT_NE(it, pymatgen.end()) << "pair " << idx[a] << "," << idx[a + 1] << " not in the fixture";
      const nlohmann::json& ref = it->second;
      MatchResult r = match_structures(cs[idx[a]], cs[idx[a + 1]], matcher());
      matched += r.matched;
      expected += ref.at("match").get<bool>();
      agree += r.matched == ref.at("match").get<bool>();
      EXPECT_EQ(r.matched, ref.at("match").get<bool>()) << "test rows " << idx[a] << ", " << idx[a + 1] << " (" << r.reason << ")";
      if (r.matched && ref.at("match").get<bool>()) EXPECT_NEAR(r.rms, ref.at("rms").get<double>(), 1e-6);
    }
  std::printf("[crys] perov-5 test: %d same-composition pairs; matched: port %d, pymatgen %d; %d agree\n", pairs, matched,
              expected, agree);
  EXPECT_EQ(pairs, static_cast<int>(pymatgen.size()));
  EXPECT_EQ(matched, expected);
}

// ---- validity ---------------------------------------------------------------------------------

TEST(CrysValidity, InvalidCrystalsAreReportedNotCrashedOn) {
  std::string why;
  Crystal ok = ideal_perovskite();
  EXPECT_TRUE(structure_valid(ok, 0.5, 0.1, &why)) << why;
  EXPECT_NEAR(min_pair_distance(ok), 2.0, 1e-12);
  EXPECT_NEAR(density(ok), (87.62 + 47.867 + 18.9984031630 + 14.006855 + 15.9994) / 64.0 * 1.66053906660, 1e-9);
  EXPECT_EQ(num_elements(ok), 5);

  Crystal overlap = ok;
  overlap.frac[1] = {0.02, 0.99, 0.0};  // 0.1 Å from the Sr at the origin, through the boundary
  EXPECT_FALSE(structure_valid(overlap, 0.5, 0.1, &why));
  EXPECT_EQ(why, "overlapping_atoms");
  EXPECT_NEAR(min_pair_distance(overlap), 4 * std::hypot(0.02, 0.01), 1e-9);

  Crystal flat = ok;
  flat.lattice[2] = {flat.lattice[0][0] + flat.lattice[1][0], flat.lattice[0][1] + flat.lattice[1][1], 0};  // coplanar
  EXPECT_FALSE(structure_valid(flat, 0.5, 0.1, &why));
  EXPECT_EQ(why, "small_volume");

  Crystal unknown = ok;
  unknown.z[0] = 150;
  EXPECT_FALSE(structure_valid(unknown, 0.5, 0.1, &why));
  EXPECT_EQ(why, "unknown_element");
  EXPECT_FALSE(composition_valid(unknown.z));

  Crystal nan = ok;
  nan.lattice[0][0] = std::nan("");
  EXPECT_FALSE(structure_valid(nan, 0.5, 0.1, &why));
  EXPECT_EQ(why, "nan_value");
  EXPECT_FALSE(match_structures(nan, ok, matcher()).matched);
  EXPECT_EQ(match_structures(flat, ok, matcher()).reason, "invalid");
  Crystal sheet = ok;  // volume 1e-9 of the cube: reported, not enumerated for ever
  sheet.lattice[2] = {0.0, 0.0, 4e-9};
  sheet.frac = {{0, 0, 0}, {0.5, 0.5, 0}, {0.25, 0.5, 0}, {0.5, 0, 0}, {0, 0.5, 0}};
  EXPECT_EQ(match_structures(sheet, ok, matcher()).reason, "degenerate_lattice");

  // The domain evaluates and writes such a batch without throwing.
  std::vector<Crystal> batch{ok, overlap, flat, unknown, nan};
  std::vector<Crystal> ref(5, ok);
  CrystalDomain d(ref, ref, perov_options(), "cpu");
  auto g = at::detail::createCPUGenerator(1);
  nlohmann::json m;
  ASSERT_NO_THROW(m = d.evaluate(to_batch(batch), to_batch(ref), d.metric_names(), g));
  EXPECT_DOUBLE_EQ(m.at("struct_validity").get<double>(), 0.2);
  EXPECT_DOUBLE_EQ(m.at("match_rate").get<double>(), 0.2);
  std::printf("[crys] invalid batch: %s\n", m.dump().c_str());
  TempDir tmp;
  auto files = d.write(to_batch(batch), tmp.path().string(), "bad");
  for (const auto& f : files) EXPECT_TRUE(fs::exists(f));
  std::ifstream in(files[0]);
  std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  EXPECT_EQ(parse_cif(text).size(), 2u);  // ok and overlap; flat is degenerate, the others cannot be built
  std::ifstream js(files[1]);
  auto summary = nlohmann::json::parse(js);
  EXPECT_EQ(summary.at("items")[2].at("invalid_reason"), "degenerate_cell");
  EXPECT_EQ(summary.at("items")[3].at("invalid_reason"), "unknown_element");
}

TEST(CrysValidity, SmactCompositionRules) {
  auto z = [](std::initializer_list<const char*> syms) {
    std::vector<int> out;
    for (const char* s : syms) out.push_back(atomic_number(s));
    return out;
  };
  EXPECT_TRUE(composition_valid(z({"Sr", "Ti", "O", "O", "O"})));
  EXPECT_TRUE(composition_valid(z({"Cs", "Pb", "I", "I", "I"})));
  EXPECT_TRUE(composition_valid(z({"Na", "Cl"})));
  EXPECT_FALSE(composition_valid(z({"Na", "Cl", "Cl"})));  // no neutral combination
  EXPECT_TRUE(composition_valid(z({"C", "C", "C"})));      // single element
  EXPECT_TRUE(composition_valid(z({"Fe", "Ni", "Ni"})));   // all-metal alloy
  EXPECT_FALSE(composition_valid(z({"He", "O"})));         // helium has no oxidation state
  EXPECT_TRUE(composition_valid(z({"Ti", "Os", "N", "O", "F"})));
  EXPECT_EQ(atomic_number("Xx"), 0);
  EXPECT_EQ(element_symbol(76), "Os");
  // Share of composition-valid crystals in perov-5 test (CDVAE reports ~98% for the data).
  auto cs = perov_test(3785);
  int valid = 0;
  for (const auto& c : cs) valid += composition_valid(c.z);
  std::printf("[crys] perov-5 test composition validity: %.4f\n", double(valid) / cs.size());
  EXPECT_GT(valid, 0.9 * cs.size());
}

TEST(CrysValidity, Wasserstein1) {
  EXPECT_NEAR(wasserstein1({0, 1, 3}, {5, 6, 8}), 5.0, 1e-12);  // a shift
  EXPECT_NEAR(wasserstein1({0, 1}, {0, 1}), 0.0, 1e-12);
  EXPECT_NEAR(wasserstein1({0}, {0, 1}), 0.5, 1e-12);
  EXPECT_NEAR(wasserstein1({3.4, 3.9, 1.0}, {2.2, 1.1}), 0.1 / 3 + 1.1 / 6 + 0.8 + 0.5 / 3, 1e-12);
}

// ---- manifest and factory -----------------------------------------------------------------------

TEST(CrysManifest, DeclaresEveryParameterOfTheDomain) {
  flowkit::core::PluginHost host(build_tree_only());
  auto spec = host.find("crysbfn.crystal");
  ASSERT_TRUE(bool(spec)) << spec.error();
  std::set<std::string> declared;
  for (const auto& p : (*spec)->params) {
    declared.insert(p.name);
    EXPECT_FALSE(p.doc.empty()) << p.name;
  }
  EXPECT_EQ(declared, (std::set<std::string>{"train_file", "reference_file", "skip_bad_rows", "task", "stol", "ltol",
                                             "angle_tol", "min_distance", "min_volume"}));

  // A wrong value names its key: the host's validation against the manifest (ranges and
  // choices live only there) ...
  nlohmann::json files = {{"train_file", kPerovDir + "val.csv.gz"}, {"reference_file", kPerovDir + "test.csv.gz"}};
  auto with = [&](nlohmann::json extra) {
    nlohmann::json j = files;
    for (auto& [k, v] : extra.items()) j[k] = v;
    return j;
  };
  try {
    resolved_config("crysbfn.crystal", with({{"task", "predict"}}), "/domain");
    FAIL() << "expected a validation error";
  } catch (const flowkit::Error& e) {
    EXPECT_THAT_MSG(e.what(), "/domain/task");
  }
  EXPECT_THROW(resolved_config("crysbfn.crystal", with({{"stol", -1.0}}), "/domain"), flowkit::Error);
  // ... and the factory for what only it can check; it finds explicit files.
  flowkit::BuildContext ctx;
  auto cfg = [](nlohmann::json j) { return resolved_config("crysbfn.crystal", j, "/domain"); };
  EXPECT_THROW(make_crystal_domain(cfg(with({{"train_file", "/nonexistent.csv"}})), ctx), flowkit::ConfigError);
  auto d = make_crystal_domain(cfg(with({{"task", "gen"}})), ctx);
  auto* domain = dynamic_cast<CrystalDomain*>(d.get());
  ASSERT_NE(domain, nullptr);
  EXPECT_EQ(domain->metric_names().front(), "struct_validity");
  auto g = at::detail::createCPUGenerator(1);
  // Generation conditions: atom counts only, drawn from the training histogram (perov-5: 5).
  auto cond = domain->sample_conditions(0, 4, g);
  EXPECT_EQ(cond.names(), std::vector<std::string>{"num_atoms"});
  EXPECT_TRUE(torch::equal(cond.at("num_atoms"), torch::full({4}, 5, torch::kLong)));
}

TEST(CrysManifest, ShippedDataIsFoundThroughThePluginFolder) {
  // Without files the domain reads data/perov_5 of ctx.plugin_dir (the build tree's copy).
  flowkit::BuildContext ctx;
  ctx.plugin_dir = PLUGIN_BUILD_DIR;
  auto d = make_crystal_domain(resolved_config("crysbfn.crystal", nlohmann::json::object(), "/domain"), ctx);
  auto* domain = dynamic_cast<CrystalDomain*>(d.get());
  ASSERT_NE(domain, nullptr);
  EXPECT_EQ(domain->reference_crystals().size(), load_cdvae_csv(kPerovDir + "test.csv.gz", false).crystals.size());
  // No plugin folder and no file: an error naming the key.
  try {
    make_crystal_domain(resolved_config("crysbfn.crystal", nlohmann::json::object(), "/domain"), flowkit::BuildContext{});
    FAIL() << "expected a ConfigError";
  } catch (const flowkit::ConfigError& e) {
    EXPECT_EQ(e.pointer(), "/domain/train_file");
  }
}

// skip_bad_rows in a real run: the rows left out are warned about in the log and counted in
// eval.json ("data": rows, skipped_rows, the first reasons naming file and row).
TEST(CrysDomain, SkippedRowsAreCountedInTheLogAndEvalJson) {
  TempDir tmp;
  std::string good = kTiOsNOF, bad = good;
  bad.replace(bad.find("_cell_length_b   4.05632160"), 27, "_cell_length_b   nan");
  const std::string csv = ",material_id,cif\n0,11,\"" + good + "\"\n1,22,\"" + bad + "\"\n2,33,\"" + good + "\"\n";
  std::ofstream(tmp.path() / "bad.csv") << csv;
  const std::string pipeline = (tmp.path() / "p.json").string();
  std::ofstream(pipeline) << R"({"name": "skip", "domain": {"type": "crysbfn.crystal", "task": "csp",
      "train_file": ")" << (tmp.path() / "bad.csv").string() << R"(", "reference_file": ")" << (tmp.path() / "bad.csv").string() << R"(",
      "skip_bad_rows": true},
    "path": {"type": "crysbfn.bfn", "steps": 2}, "model": {"type": "crysbfn.cspnet", "hidden": 8, "layers": 1},
    "loss": {"type": "crysbfn.bfn_loss"}, "solver": {"type": "crysbfn.bfn_sampler"},
    "train": {"steps": 1, "batch_size": 2, "log_every": 1}, "sample": {"count": 2}, "eval": {"reference_count": 2}})";
  std::string out;
  ASSERT_EQ(run_command("cd " + tmp.path().string() + " && env -u FLOWKIT_PLUGIN_PATH " FLOWKIT_BINARY_DIR "/bin/flowkit run " + pipeline, &out), 0) << out;
  std::ifstream log(tmp.path() / "runs/skip/log.txt");
  std::string log_text((std::istreambuf_iterator<char>(log)), std::istreambuf_iterator<char>());
  EXPECT_THAT_MSG(log_text, "left out 2 of 6 data rows");  // the file is read as training and reference set
  EXPECT_THAT_MSG(log_text, "row 2 (line 34, material_id 22)");
  auto eval = nlohmann::json::parse(std::ifstream(tmp.path() / "runs/skip/eval.json"));
  EXPECT_EQ(eval["data"]["rows"], 6);
  EXPECT_EQ(eval["data"]["skipped_rows"], 2);
  ASSERT_EQ(eval["data"]["skipped_reasons"].size(), 2u);
  EXPECT_THAT_MSG(eval["data"]["skipped_reasons"][0].get<std::string>(), "_cell_length_b");
}
