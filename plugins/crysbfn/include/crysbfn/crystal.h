// crysbfn/crystal.h — the crystal data model: lattice conventions, element data, a CIF
// reader/writer, the CDVAE CSV loader and the conversion to and from a flowkit Batch.
//
// A crystal is (L, F, Z): L a 3x3 lattice matrix whose ROWS are the lattice vectors (Å),
// F fractional coordinates [n, 3], Z atomic numbers [n]. Everything here is float64 on the CPU.
#pragma once
#include <torch/torch.h>

#include <array>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

#include "flowkit/error.h"
#include "flowkit/tensor_map.h"

namespace crysbfn {

using Vec3 = std::array<double, 3>;
using Mat3 = std::array<Vec3, 3>;  // rows

// ---- small linear algebra ---------------------------------------------------------------
double det(const Mat3& m);
Mat3 inverse(const Mat3& m);        // throws std::runtime_error when singular
Mat3 matmul(const Mat3& a, const Mat3& b);
Mat3 transpose(const Mat3& m);
Vec3 row_times(const Vec3& v, const Mat3& m);  // v (row vector) * m
double dot(const Vec3& a, const Vec3& b);
double norm(const Vec3& a);

// ---- lattice conventions ----------------------------------------------------------------
// pymatgen's Lattice.from_parameters (and CDVAE's lattice_params_to_matrix_torch):
//   gamma* = acos((cos a cos b - cos g) / (sin a sin b))
//   a_vec = (a sin b, 0, a cos b), b_vec = (-b sin a cos g*, b sin a sin g*, b cos a), c_vec = (0, 0, c)
// Angles in degrees.
Mat3 lattice_from_parameters(double a, double b, double c, double alpha, double beta, double gamma);
// (a, b, c, alpha, beta, gamma), lengths in Å, angles in degrees.
std::array<double, 6> lattice_parameters(const Mat3& lattice);
double volume(const Mat3& lattice);  // |det|
// Reciprocal lattice lengths WITHOUT the 2 pi factor (= 1 / interplanar spacing d_k).
Vec3 reciprocal_lengths(const Mat3& lattice);

// ---- elements (data from SMACT's element_data.txt / oxidation_states.txt, see data/perov_5/README.md)
constexpr int kMaxZ = 103;
int atomic_number(const std::string& symbol);  // 0 when unknown ("Fe", "fe" and "FE" all work)
std::string element_symbol(int z);             // "" when z is outside 1..103
double atomic_mass(int z);                     // amu; NaN when unknown
double pauling_electronegativity(int z);       // NaN where SMACT has None
const std::vector<int>& oxidation_states(int z);  // SMACT's full list; empty when none/unknown
bool is_smact_metal(int z);

// ---- the crystal ------------------------------------------------------------------------
struct Crystal {
  Mat3 lattice{};
  std::vector<Vec3> frac;
  std::vector<int> z;
  std::string id;  // material_id or CIF block name, informational

  size_t size() const { return z.size(); }
  std::array<double, 6> parameters() const { return lattice_parameters(lattice); }
  double volume() const { return crysbfn::volume(lattice); }
  // Elements in order of first appearance, counts > 1 appended ("SrTiO3", "TiOsNOF");
  // unknown atomic numbers appear as "X".
  std::string formula() const;
  std::string formula_sum() const;   // "Ti1 Os1 N1 O1 F1" (CIF _chemical_formula_sum)
};

// ---- CIF --------------------------------------------------------------------------------
// Error of the CIF reader: `field` is the CIF tag (or "cif" for syntax errors).
class CifError : public flowkit::Error {
 public:
  CifError(std::string field, const std::string& message) : flowkit::Error(field + ": " + message), field_(std::move(field)) {}
  const std::string& field() const { return field_; }

 private:
  std::string field_;
};

// Parses every data block of a CIF text (comments, 'single'/"double" quoted values,
// ;-delimited text fields, loop_, values with standard uncertainties "4.0563(2)").
// Needs _cell_length_a/b/c, _cell_angle_alpha/beta/gamma and an atom_site loop with
// _atom_site_fract_x/y/z and _atom_site_type_symbol (or _atom_site_label). Symmetry
// operations (_symmetry_equiv_pos_as_xyz / _space_group_symop_operation_xyz) are applied
// and duplicate sites (within 1e-4 in fractional coordinates) merged. Fractional coordinates
// are wrapped into [0, 1). Sites come in pymatgen CifParser's order (sorted by electronegativity,
// stable) and coordinates within 1e-4 of 1/3 or 2/3 are snapped, as CifParser does: pymatgen's
// StructureMatcher anchors on the first site of the rarest species, so the order changes its
// verdict near stol. Partial occupancy is an error. Throws CifError.
std::vector<Crystal> parse_cif(const std::string& text);

// One pymatgen-style P1 data block (CifWriter layout, 8 decimals). `block` names the block
// (data_<block>); default: the formula.
std::string write_cif_block(const Crystal& crystal, const std::string& block = "");

// ---- CDVAE CSV --------------------------------------------------------------------------
struct CsvLoadResult {
  std::vector<Crystal> crystals;
  int64_t rows = 0;                 // data rows in the file
  int64_t skipped = 0;              // rows skipped because they were malformed
  std::vector<std::string> errors;  // one message per skipped row (first 20)
};
// Reads a CDVAE-format CSV (plain or gzip; RFC 4180 quoting with multi-line fields) with a
// `cif` column (and optionally `material_id`). A malformed row throws flowkit::Error naming
// the file, the row (1-based data row and its first line) and the CIF field; with
// skip_bad_rows it is skipped and counted instead.
CsvLoadResult load_cdvae_csv(const std::string& file, bool skip_bad_rows);
// The same from the (decompressed) text; `file` names it in errors.
CsvLoadResult parse_cdvae_csv(const std::string& text, const std::string& file, bool skip_bad_rows);

// ---- batches ----------------------------------------------------------------------------
// Batch layout of B crystals with A atoms in all:
//   "lattice"   float32 [B, 3, 3]  rows = lattice vectors (Å)
//   "frac"      float32 [A, 3]     fractional coordinates in [0, 1)
//   "types"     int64   [A]        atomic numbers
//   "num_atoms" int64   [B]
//   "batch"     int64   [A]        crystal index of each atom
//   "x"         float32 [B, 6]     lattice parameters (a, b, c in Å, alpha, beta, gamma in degrees):
//                                  the fixed-shape primary field of the flowkit contract
flowkit::Batch to_batch(const std::vector<Crystal>& crystals, const torch::Device& device = torch::kCPU);
// Inverse of to_batch. Reads "frac", "types", "num_atoms" and the lattice from "lattice"
// [B,3,3] when present, else from "x" [B,6] parameters. The per-atom crystal index is
// recomputed from num_atoms (so concatenated batches work).
std::vector<Crystal> from_batch(const flowkit::Batch& batch);

}  // namespace crysbfn
