// crysbfn/domain.h — the crystal domain `crysbfn.crystal`: CDVAE-format data sets (perov-5
// shipped), crystal batches, CSP and generation metrics, CIF + JSON writers.
#pragma once
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "crysbfn/crystal.h"
#include "crysbfn/metrics.h"
#include "flowkit/capabilities/skipped_data.h"
#include "flowkit/config.h"
#include "flowkit/domain.h"
#include "flowkit/registry.h"

namespace crysbfn {

// The parameters of `crysbfn.crystal`, filled by crystal_domain_options (defaults: plugin.json).
struct CrystalDomainOptions {
  std::string train_file;      // CDVAE CSV (.csv or .csv.gz) sampled for training
  std::string reference_file;  // CDVAE CSV whose leading rows are the fixed reference subset
  bool skip_bad_rows = false;
  std::string task;            // "csp" (match rate first) or "gen" (validity and distances)
  MatcherOptions matcher;
  double min_distance = 0;     // structural validity: smallest allowed interatomic distance (Å)
  double min_volume = 0;       // structural validity: smallest allowed cell volume (Å^3)
};
// Reads every key of `crysbfn.crystal`; a file not given is the perov-5 one shipped in
// ctx.plugin_dir/data/perov_5/{val,test}.csv.gz; fails naming the key when a file is missing.
CrystalDomainOptions crystal_domain_options(const flowkit::Config& cfg, const flowkit::BuildContext& ctx);

// Capability of a crystal domain: the elements of its training data, the vocabulary of a
// network that generates atom types (crysbfn.cspnet with type_input "distribution").
class CrystalVocabulary {
 public:
  virtual ~CrystalVocabulary();
  // Sorted distinct atomic numbers.
  virtual std::vector<int64_t> training_elements() const = 0;
};

// Batches follow crysbfn/crystal.h (to_batch). The primary field "x" is [B, 6] lattice
// parameters; item_shape() is {6}.
class CrystalDomain : public flowkit::Domain, public CrystalVocabulary, public flowkit::SkippedData {
 public:
  CrystalDomain(CrystalDomainOptions options, std::string device);
  // Built from crystals directly (tests).
  CrystalDomain(std::vector<Crystal> train, std::vector<Crystal> reference, CrystalDomainOptions options,
                std::string device);

  std::vector<int64_t> item_shape() const override { return {6}; }
  // n crystals drawn uniformly with replacement from the training file.
  flowkit::Batch train_batch(int64_t n, torch::Generator& gen) override;
  // The first min(n, size) crystals of the reference file, in file order (a fixed subset;
  // the generator is not used), so CSP predictions pair with references by index.
  flowkit::Batch reference(int64_t n, torch::Generator& gen) override;
  // CSP: the compositions ("types", "num_atoms", "batch") of reference items first..first+n-1.
  // Generation: "num_atoms" drawn from the training set's atom-count histogram.
  flowkit::Conditioning sample_conditions(int64_t first, int64_t n, torch::Generator& gen) const override;

  // csp: match_rate, rmse, match_rate_novel, lattice_length_error, struct_validity, comp_validity,
  //      validity, density_w1, num_elements_w1; gen: the validity and distance metrics first.
  std::vector<std::string> metric_names() const override;
  // match_rate: generated[i] vs reference[i] for i < min(B_gen, B_ref), matched and
  //   structurally valid, divided by the number of pairs. rmse: mean normalised RMS over the
  //   matched pairs (NaN when none matched). *_validity: fractions of generated crystals.
  //   match_rate_novel: the match rate over pairs whose reference composition is absent from
  //   the training file. lattice_length_error: mean |a - a_ref| / a_ref over a, b, c.
  //   density_w1, num_elements_w1: Wasserstein-1 between the valid generated crystals (all
  //   constructible ones when none is valid) and the reference crystals.
  // Extra keys: "pairs", "matched", "invalid_reasons" (counts).
  nlohmann::json evaluate(const flowkit::Batch& generated, const flowkit::Batch& reference,
                          const std::vector<std::string>& metrics, torch::Generator& gen) const override;
  // <stem>.cif: one P1 data block per constructible crystal (pymatgen CifParser reads it);
  // <stem>.json: per crystal formula, lattice parameters, volume, density, validity.
  std::vector<std::string> write(const flowkit::Batch& samples, const std::string& dir,
                                 const std::string& stem) const override;

  std::vector<int64_t> training_elements() const override;

  const std::vector<Crystal>& train_crystals() const { return train_; }
  const std::vector<Crystal>& reference_crystals() const { return reference_; }
  // The malformed rows left out of both files (skip_bad_rows), with the first reasons.
  flowkit::SkippedRows skipped_rows() const override { return skipped_; }

 private:
  void index_train_compositions();
  CrystalDomainOptions options_;
  std::vector<Crystal> train_, reference_;
  std::set<std::vector<int>> train_compositions_;  // sorted atomic numbers of each training crystal
  flowkit::SkippedRows skipped_;
  torch::Device device_;
};

// Factory of `crysbfn.crystal`.
std::unique_ptr<flowkit::Component> make_crystal_domain(const flowkit::Config& cfg, const flowkit::BuildContext& ctx);

}  // namespace crysbfn
