// The crystal domain `crysbfn.crystal` and its factory.
#include "crysbfn/domain.h"

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <limits>
#include <map>

#include "flowkit/error.h"
#include "flowkit/io.h"
#include "flowkit/progress.h"
#include "flowkit/random.h"

namespace crysbfn {

namespace fs = std::filesystem;
using flowkit::Batch;

static constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

static std::vector<Crystal> load(const std::string& file, bool skip, flowkit::SkippedRows* skipped) {
  CsvLoadResult r = load_cdvae_csv(file, skip);
  skipped->rows += r.rows;
  skipped->skipped += r.skipped;
  for (const auto& reason : r.errors)
    if (skipped->reasons.size() < 5) skipped->reasons.push_back(reason);
  if (r.crystals.empty()) throw flowkit::Error("'" + file + "' holds no usable crystal");
  return std::move(r.crystals);
}

CrystalDomain::CrystalDomain(CrystalDomainOptions options, std::string device)
    : options_(std::move(options)), device_(device) {
  train_ = load(options_.train_file, options_.skip_bad_rows, &skipped_);
  reference_ = load(options_.reference_file, options_.skip_bad_rows, &skipped_);
  index_train_compositions();
}

void CrystalDomain::index_train_compositions() {
  for (const auto& c : train_) {
    auto key = c.z;
    std::sort(key.begin(), key.end());
    train_compositions_.insert(key);
  }
}

CrystalDomain::CrystalDomain(std::vector<Crystal> train, std::vector<Crystal> reference, CrystalDomainOptions options,
                             std::string device)
    : options_(std::move(options)), train_(std::move(train)), reference_(std::move(reference)), device_(device) {
  if (train_.empty() || reference_.empty()) throw flowkit::Error("crysbfn.crystal: empty training or reference set");
  index_train_compositions();
}

CrystalVocabulary::~CrystalVocabulary() = default;

std::vector<int64_t> CrystalDomain::training_elements() const {
  std::set<int64_t> zs;
  for (const auto& c : train_)
    for (int z : c.z) zs.insert(z);
  return {zs.begin(), zs.end()};
}

Batch CrystalDomain::train_batch(int64_t n, torch::Generator& gen) {
  torch::Tensor idx = flowkit::random::randint(0, static_cast<int64_t>(train_.size()), {n}, gen);
  auto I = idx.accessor<int64_t, 1>();
  std::vector<Crystal> picked;
  picked.reserve(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) picked.push_back(train_[I[i]]);
  return to_batch(picked, device_);
}

Batch CrystalDomain::reference(int64_t n, torch::Generator&) {
  const size_t m = std::min(static_cast<size_t>(std::max<int64_t>(n, 0)), reference_.size());
  return to_batch(std::vector<Crystal>(reference_.begin(), reference_.begin() + static_cast<long>(m)), device_);
}

flowkit::Conditioning CrystalDomain::sample_conditions(int64_t first, int64_t n, torch::Generator& gen) const {
  flowkit::Conditioning c;
  if (options_.task != "csp") {
    // Generation: atom counts drawn from the training histogram (CDVAE's num_atoms_dist).
    torch::Tensor idx = flowkit::random::randint(0, static_cast<int64_t>(train_.size()), {std::max<int64_t>(n, 0)}, gen);
    torch::Tensor num = torch::empty({idx.size(0)}, torch::kLong);
    for (int64_t i = 0; i < idx.size(0); ++i) num[i] = static_cast<int64_t>(train_[idx[i].item<int64_t>()].size());
    c.set("num_atoms", num.to(device_));
    return c;
  }
  // Items first .. first+n-1 of reference(count): the compositions to predict, in order.
  const size_t lo = std::min(static_cast<size_t>(std::max<int64_t>(first, 0)), reference_.size());
  const size_t hi = std::min(lo + static_cast<size_t>(std::max<int64_t>(n, 0)), reference_.size());
  Batch ref = to_batch(std::vector<Crystal>(reference_.begin() + static_cast<long>(lo), reference_.begin() + static_cast<long>(hi)), device_);
  for (const char* name : {"types", "num_atoms", "batch"}) c.set(name, ref.at(name));
  return c;
}

std::vector<std::string> CrystalDomain::metric_names() const {
  if (options_.task == "csp")
    return {"match_rate", "rmse", "match_rate_novel", "lattice_length_error", "struct_validity", "comp_validity", "validity",
            "density_w1", "num_elements_w1"};
  return {"struct_validity", "comp_validity", "validity", "density_w1", "num_elements_w1", "match_rate", "rmse",
          "match_rate_novel", "lattice_length_error"};
}

nlohmann::json CrystalDomain::evaluate(const Batch& generated, const Batch& reference,
                                       const std::vector<std::string>& metrics, torch::Generator&) const {
  const auto known = metric_names();
  for (const auto& m : metrics)
    if (std::find(known.begin(), known.end(), m) == known.end()) {
      std::string list;
      for (const auto& k : known) list += (list.empty() ? "" : ", ") + k;
      throw flowkit::Error("crysbfn.crystal: unknown metric '" + m + "' (available: " + list + ")");
    }
  auto wants = [&](std::initializer_list<const char*> names) {
    for (const char* n : names)
      if (std::find(metrics.begin(), metrics.end(), n) != metrics.end()) return true;
    return false;
  };
  std::vector<Crystal> gen = from_batch(generated), ref = from_batch(reference);
  nlohmann::json out = nlohmann::json::object();

  // Validity of every generated crystal (needed by the match rate and the distances too).
  std::vector<char> sv(gen.size()), cv(gen.size());
  std::map<std::string, int> reasons;
  for (size_t i = 0; i < gen.size(); ++i) {
    std::string why;
    sv[i] = structure_valid(gen[i], options_.min_distance, options_.min_volume, &why);
    if (!sv[i]) ++reasons[why];
    cv[i] = composition_valid(gen[i].z);
    if (!cv[i] && why != "unknown_element") ++reasons["composition"];
  }
  auto fraction = [&](auto pred) {
    if (gen.empty()) return kNaN;
    double k = 0;
    for (size_t i = 0; i < gen.size(); ++i) k += pred(i) ? 1 : 0;
    return k / static_cast<double>(gen.size());
  };
  if (wants({"struct_validity"})) out["struct_validity"] = fraction([&](size_t i) { return sv[i] != 0; });
  if (wants({"comp_validity"})) out["comp_validity"] = fraction([&](size_t i) { return cv[i] != 0; });
  if (wants({"validity"})) out["validity"] = fraction([&](size_t i) { return sv[i] && cv[i]; });
  out["invalid_reasons"] = reasons;

  if (wants({"match_rate", "rmse", "match_rate_novel", "lattice_length_error"})) {
    const size_t pairs = std::min(gen.size(), ref.size());
    size_t matched = 0;
    double rms_sum = 0;
    std::vector<char> is_match(pairs, 0);
    flowkit::Progress progress("structure matching", static_cast<int64_t>(pairs));
    for (size_t i = 0; i < pairs; ++i) {
      progress.advance();
      if (!sv[i]) continue;  // CDVAE: only structurally valid predictions can match
      MatchResult r = match_structures(gen[i], ref[i], options_.matcher);
      if (r.matched) ++matched, rms_sum += r.rms, is_match[i] = 1;
    }
    out["pairs"] = pairs;
    out["matched"] = matched;
    // The same restricted to reference compositions absent from the training file (perov-5's
    // random split puts polymorphs of one composition on both sides).
    size_t novel = 0, novel_matched = 0;
    double length_error = 0;
    size_t lengths = 0;
    for (size_t i = 0; i < pairs; ++i) {
      auto key = ref[i].z;
      std::sort(key.begin(), key.end());
      if (!train_compositions_.count(key)) {
        ++novel;
        novel_matched += is_match[i];
      }
      auto pg = gen[i].parameters(), pr = ref[i].parameters();
      if (std::isfinite(pg[0] + pg[1] + pg[2])) {
        for (int k = 0; k < 3; ++k) length_error += std::abs(pg[k] - pr[k]) / pr[k] / 3;
        ++lengths;
      }
    }
    out["novel_pairs"] = novel;
    if (wants({"match_rate_novel"})) out["match_rate_novel"] = novel ? static_cast<double>(novel_matched) / static_cast<double>(novel) : kNaN;
    if (wants({"lattice_length_error"})) out["lattice_length_error"] = lengths ? length_error / static_cast<double>(lengths) : kNaN;
    if (wants({"match_rate"})) out["match_rate"] = pairs ? static_cast<double>(matched) / static_cast<double>(pairs) : kNaN;
    if (wants({"rmse"})) out["rmse"] = matched ? rms_sum / static_cast<double>(matched) : kNaN;
  }

  if (wants({"density_w1", "num_elements_w1"})) {
    std::vector<size_t> use;
    for (size_t i = 0; i < gen.size(); ++i)
      if (sv[i] && cv[i]) use.push_back(i);
    if (use.empty())
      for (size_t i = 0; i < gen.size(); ++i)
        if (construction_problem(gen[i]).empty() && gen[i].volume() > 0) use.push_back(i);
    std::vector<double> gd, gn, rd, rn;
    for (size_t i : use) gd.push_back(density(gen[i])), gn.push_back(num_elements(gen[i]));
    for (const auto& c : ref)
      if (construction_problem(c).empty()) rd.push_back(density(c)), rn.push_back(num_elements(c));
    if (wants({"density_w1"})) out["density_w1"] = wasserstein1(gd, rd);
    if (wants({"num_elements_w1"})) out["num_elements_w1"] = wasserstein1(gn, rn);
  }
  // Non-finite values (nothing matched, nothing valid) are written as JSON null.
  return out;
}

std::vector<std::string> CrystalDomain::write(const Batch& samples, const std::string& dir,
                                              const std::string& stem) const {
  std::vector<Crystal> cs = from_batch(samples);
  std::string cif;
  nlohmann::json items = nlohmann::json::array();
  int written = 0;
  for (size_t i = 0; i < cs.size(); ++i) {
    const Crystal& c = cs[i];
    nlohmann::json item;
    item["index"] = i;
    item["formula"] = c.formula();
    item["num_atoms"] = c.size();
    std::string problem = construction_problem(c);
    // Degenerate cells (volume <= 1e-4 a b c) are not written: their angles, rounded to 8
    // decimals, may not describe a cell at all.
    if (problem.empty()) {
      auto p = c.parameters();
      if (!(c.volume() > 1e-4 * p[0] * p[1] * p[2])) problem = "degenerate_cell";
    }
    if (problem.empty()) {
      char block[64];
      std::snprintf(block, sizeof block, "%s_%06zu_", stem.c_str(), i);
      cif += write_cif_block(c, block + c.formula()) + "\n";
      auto p = c.parameters();
      item["lattice_parameters"] = {p[0], p[1], p[2], p[3], p[4], p[5]};
      item["volume"] = c.volume();
      item["density"] = density(c);
      std::string why;
      item["struct_valid"] = structure_valid(c, options_.min_distance, options_.min_volume, &why);
      if (!why.empty()) item["invalid_reason"] = why;
      item["min_distance"] = c.size() > 1 ? min_pair_distance(c) : kNaN;
      item["written"] = true;
      ++written;
    } else {
      item["struct_valid"] = false;
      item["invalid_reason"] = problem;
      item["written"] = false;
    }
    item["comp_valid"] = composition_valid(c.z);
    items.push_back(std::move(item));
  }
  fs::create_directories(dir);
  std::string cif_path = (fs::path(dir) / (stem + ".cif")).string();
  std::string json_path = (fs::path(dir) / (stem + ".json")).string();
  flowkit::io::write_file_atomic(cif_path, cif);
  nlohmann::json summary = {{"crystals", cs.size()}, {"written_to_cif", written}, {"cif", fs::path(cif_path).filename().string()},
                            {"lattice_convention", "rows are lattice vectors (Å); angles in degrees"},
                            {"items", items}};
  flowkit::io::write_file_atomic(json_path, summary.dump(1) + "\n");
  return {cif_path, json_path};
}

// ---- factory -------------------------------------------------------------------------------------

CrystalDomainOptions crystal_domain_options(const flowkit::Config& cfg, const flowkit::BuildContext& ctx) {
  CrystalDomainOptions o;
  auto file_param = [&](const char* key, const char* shipped_name) {
    if (auto f = cfg.optional<std::string>(key)) {
      if (!fs::exists(*f)) cfg.fail(key, "no such file: '" + *f + "'");
      return *f;
    }
    if (ctx.plugin_dir.empty()) cfg.fail(key, "no file given and no plugin folder to find the shipped perov-5 data in");
    std::string f = (fs::path(ctx.plugin_dir) / "data" / "perov_5" / shipped_name).string();
    if (!fs::exists(f))
      cfg.fail(key, "the perov-5 data is not installed in the plugin folder ('" + f + "' is missing); pass a file");
    return f;
  };
  o.train_file = file_param("train_file", "val.csv.gz");
  o.reference_file = file_param("reference_file", "test.csv.gz");
  o.skip_bad_rows = cfg.get<bool>("skip_bad_rows");
  o.task = cfg.get<std::string>("task");
  o.matcher.stol = cfg.get<double>("stol");
  o.matcher.ltol = cfg.get<double>("ltol");
  o.matcher.angle_tol = cfg.get<double>("angle_tol");
  o.min_distance = cfg.get<double>("min_distance");
  o.min_volume = cfg.get<double>("min_volume");
  return o;
}

std::unique_ptr<flowkit::Component> make_crystal_domain(const flowkit::Config& cfg, const flowkit::BuildContext& ctx) {
  CrystalDomainOptions o = crystal_domain_options(cfg, ctx);
  try {
    return std::make_unique<CrystalDomain>(o, ctx.device);
  } catch (const flowkit::ConfigError&) {
    throw;
  } catch (const flowkit::Error& e) {
    cfg.fail("train_file", e.what());
  }
}

}  // namespace crysbfn
