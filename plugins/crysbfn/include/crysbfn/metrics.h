// crysbfn/metrics.h — crystal metrics as the CDVAE/DiffCSP evaluation defines them:
// a StructureMatcher (port of pymatgen's get_rms_dist algorithm), structural and
// composition (SMACT-like) validity, density, number of elements, 1-D Wasserstein distance.
#pragma once
#include <string>
#include <vector>

#include "crysbfn/crystal.h"

namespace crysbfn {

// ---- lattice reduction ------------------------------------------------------------------
// LLL reduction of the rows (delta = 0.75, as pymatgen). Returns the reduced basis.
Mat3 lll_reduce(const Mat3& lattice, double delta = 0.75);
// Niggli reduction (Křivý–Gruber, with pymatgen's tolerance convention e = tol * V^(1/3)),
// started from the LLL basis; the returned basis spans the same lattice, det > 0.
Mat3 niggli_reduce(const Mat3& lattice, double tol = 1e-5);

// ---- StructureMatcher -------------------------------------------------------------------
// stol, ltol, angle_tol are parameters of `crysbfn.crystal` (defaults: plugin.json).
struct MatcherOptions {
  double stol = 0;          // site tolerance, in units of (V/n)^(1/3)
  double ltol = 0;          // fractional length tolerance
  double angle_tol = 0;     // degrees
  bool scale = true;        // scale both lattices to the same volume first
  bool niggli = true;       // Niggli-reduce both structures first
  bool primitive_cell = true;  // then reduce both to their primitive cells (tolerance 0.25 Å)
};

struct MatchResult {
  bool matched = false;
  double rms = 0;       // normalised RMS displacement (when matched)
  double max_dist = 0;  // largest normalised displacement (when matched)
  // why not matched: "composition", "site_count", "invalid", "degenerate_lattice" (more than
  // 2e7 lattice points to enumerate), "no_lattice_mapping", "stol"
  std::string reason;
  int lattice_mappings = 0;  // candidate lattices tried (diagnostic)
};

// pymatgen StructureMatcher(stol, ltol, angle_tol, primitive_cell=True, scale=True,
// attempt_supercell=False).get_rms_dist(pred, ref), species compared by atomic number:
// Niggli reduction, primitive-cell reduction (Structure.get_primitive_structure, tolerance
// 0.25 Å; a no-op whenever the gcd of the species counts is 1, e.g. every perov-5 crystal),
// same site count and composition after it, volume scaling, every lattice mapping of pred's
// lattice onto ref's within ltol/angle_tol with |det| = 1, for each mapping every translation
// that puts a pred site of the rarest species on the ref anchor, a coarse fractional-tolerance
// test, then the assignment (Hungarian) of shortest periodic displacement vectors, mean
// translation removed, RMS normalised by (V/n)^(1/3) of the average lattice. Matched iff the
// minimum RMS < stol. Checked pair by pair against pymatgen 2022.11 on the committed fixture
// tests/data/matcher_pymatgen_pairs.json. Not ported: supercell matching (attempt_supercell).
MatchResult match_structures(const Crystal& pred, const Crystal& ref, const MatcherOptions& options);

// ---- validity ---------------------------------------------------------------------------
// Why a crystal cannot be built at all: "" when it can, else "nan_value",
// "non_positive_lattice", "unknown_element", "no_atoms" (CDVAE Crystal.get_structure reasons
// plus the last two).
std::string construction_problem(const Crystal& c);
// Smallest distance between two distinct sites under periodic boundary conditions (27
// images of the LLL-reduced cell); +inf for a single atom.
double min_pair_distance(const Crystal& c);
// CDVAE structure_validity: constructible, all pairwise distances >= cutoff and volume >= min_volume.
// `reason` (optional) receives "" or a short reason ("overlapping_atoms", "small_volume", ...).
bool structure_valid(const Crystal& c, double cutoff, double min_volume, std::string* reason = nullptr);
// CDVAE smact_validity(use_pauling_test=True, include_alloys=True) on the reduced
// composition: a single element or all-metal alloy is valid; otherwise some combination of
// SMACT oxidation states must be charge neutral and pass SMACT's Pauling electronegativity
// ordering test (cations less electronegative than anions; missing data passes).
bool composition_valid(const std::vector<int>& z);

// Density in g/cm^3 (pymatgen Structure.density); NaN when not constructible.
double density(const Crystal& c);
int num_elements(const Crystal& c);

// 1-D Wasserstein-1 distance between two empirical distributions (scipy.stats.wasserstein_distance).
double wasserstein1(std::vector<double> u, std::vector<double> v);

}  // namespace crysbfn
