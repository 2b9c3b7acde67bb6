// The tensor domain: a user's .npy or .csv data, split, normalised and written back.
#include <torch/torch.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "flowkit/error.h"
#include "flowkit/io.h"
#include "flowkit/random.h"
#include "standard/domains.h"
#include "standard/held_out.h"
#include "standard/tensor_domain.h"
#include "standard/util.h"

namespace standard {

namespace fs = std::filesystem;
using flowkit::Batch;

// ---- reading ------------------------------------------------------------------------------

namespace {

std::vector<std::string> split_fields(const std::string& line) {
  std::vector<std::string> out;
  std::string field;
  std::stringstream ss(line);
  while (std::getline(ss, field, ',')) {
    const size_t b = field.find_first_not_of(" \t\r"), e = field.find_last_not_of(" \t\r");
    field = b == std::string::npos ? "" : field.substr(b, e - b + 1);
    if (field.size() >= 2 && field.front() == '"' && field.back() == '"') field = field.substr(1, field.size() - 2);
    out.push_back(field);
  }
  if (!line.empty() && line.back() == ',') out.push_back("");
  return out;
}

bool parse_number(const std::string& s, double* v) {
  if (s.empty()) return false;
  char* end = nullptr;
  errno = 0;
  *v = std::strtod(s.c_str(), &end);
  return end == s.c_str() + s.size() && errno != ERANGE;
}

torch::Tensor integer_labels(const torch::Tensor& values, const std::string& where) {
  torch::Tensor v = values.to(torch::kDouble).reshape({-1});
  auto a = v.accessor<double, 1>();
  for (int64_t i = 0; i < v.size(0); ++i)
    if (!(a[i] >= 0) || a[i] != std::floor(a[i]) || a[i] > 1e6)
      throw flowkit::Error(where + ", row " + std::to_string(i) + ": label " + std::to_string(a[i]) +
                           " is not a non-negative integer (classes are 0..K-1)");
  return v.to(torch::kLong);
}

void check_finite(const torch::Tensor& x, const std::string& where) {
  torch::Tensor bad = ~torch::isfinite(x.reshape({x.size(0), -1})).all(1);
  if (bad.any().item<bool>())
    throw flowkit::Error(where + ", row " + std::to_string(torch::nonzero(bad)[0][0].item<int64_t>()) +
                         ": a value is NaN or infinite");
}

}  // namespace

TensorData read_tensor_csv(const std::string& file, const std::string& label_column,
                           const std::vector<std::string>& condition_columns) {
  std::ifstream in(file);
  if (!in) throw flowkit::Error("cannot open '" + file + "'");
  std::string line;
  std::vector<std::string> header;
  std::vector<double> values;
  size_t width = 0;
  int64_t line_no = 0, rows = 0;
  while (std::getline(in, line)) {
    ++line_no;
    if (line_no == 1 && line.rfind("\xEF\xBB\xBF", 0) == 0) line.erase(0, 3);  // a UTF-8 byte-order mark (Excel's "CSV UTF-8")
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    std::vector<std::string> fields = split_fields(line);
    double v = 0;
    if (rows == 0 && header.empty() && width == 0 &&
        std::any_of(fields.begin(), fields.end(), [&](const std::string& f) { return !parse_number(f, &v); })) {
      header = fields;
      width = fields.size();
      continue;
    }
    if (width == 0) width = fields.size();
    if (fields.size() != width)
      throw flowkit::Error("'" + file + "', line " + std::to_string(line_no) + ": expected " + std::to_string(width) +
                           " comma-separated fields, found " + std::to_string(fields.size()));
    for (size_t c = 0; c < width; ++c) {
      if (!parse_number(fields[c], &v))
        throw flowkit::Error("'" + file + "', line " + std::to_string(line_no) + ", column " +
                             (header.empty() ? std::to_string(c + 1) : "'" + header[c] + "'") + ": '" +
                             fields[c].substr(0, 40) + "' is not a number");
      values.push_back(v);
    }
    ++rows;
  }
  if (rows == 0) throw flowkit::Error("'" + file + "' holds no data rows");
  auto column = [&](const std::string& name) -> int64_t {
    if (header.empty())
      throw flowkit::Error("'" + file + "' has no header line, so it has no column '" + name + "'");
    auto it = std::find(header.begin(), header.end(), name);
    if (it == header.end()) {
      std::string known;
      for (const auto& h : header) known += (known.empty() ? "" : ", ") + h;
      throw flowkit::Error("'" + file + "' has no column '" + name + "' (its columns: " + known + ")");
    }
    return it - header.begin();
  };
  torch::Tensor table = torch::tensor(values, torch::kDouble).reshape({rows, static_cast<int64_t>(width)});
  std::vector<bool> used(width, false);
  TensorData d;
  if (!label_column.empty()) {
    const int64_t c = column(label_column);
    d.labels = integer_labels(table.select(1, c), "'" + file + "', column '" + label_column + "'");
    d.label_column = label_column;
    used[c] = true;
  }
  std::vector<int64_t> cond_idx, data_idx;
  for (const auto& name : condition_columns) {
    const int64_t c = column(name);
    if (used[c]) throw flowkit::Error("'" + file + "': column '" + name + "' is used twice");
    cond_idx.push_back(c);
    used[c] = true;
    d.condition_columns.push_back(name);
  }
  for (size_t c = 0; c < width; ++c)
    if (!used[c]) {
      data_idx.push_back(static_cast<int64_t>(c));
      d.columns.push_back(header.empty() ? "x" + std::to_string(c) : header[c]);
    }
  if (data_idx.empty()) throw flowkit::Error("'" + file + "': no columns are left for the items");
  d.x = table.index_select(1, torch::tensor(data_idx, torch::kLong)).to(torch::kFloat);
  if (!cond_idx.empty()) d.condition = table.index_select(1, torch::tensor(cond_idx, torch::kLong)).to(torch::kFloat);
  return d;
}

TensorData read_tensor_npy(const std::string& file, const std::string& labels_file, const std::string& conditions_file) {
  TensorData d;
  torch::Tensor x = npy_tensor(flowkit::io::read_npy_array(file), file);
  if (x.dim() < 1 || x.size(0) == 0) throw flowkit::Error("'" + file + "' holds no items (its shape must be [N, ...])");
  d.x = (x.dim() == 1 ? x.unsqueeze(1) : x).to(torch::kFloat);
  auto same_rows = [&](const torch::Tensor& t, const std::string& f) {
    if (t.dim() < 1 || t.size(0) != d.x.size(0))
      throw flowkit::Error("'" + f + "' has " + (t.dim() < 1 ? std::string("no rows") : std::to_string(t.size(0)) + " rows") +
                           ", but the data '" + file + "' has " + std::to_string(d.x.size(0)));
  };
  if (!labels_file.empty()) {
    torch::Tensor l = npy_tensor(flowkit::io::read_npy_array(labels_file), labels_file);
    same_rows(l, labels_file);
    if (l.dim() != 1) throw flowkit::Error("'" + labels_file + "': labels must be a 1-D array [N]");
    d.labels = integer_labels(l, "'" + labels_file + "'");
  }
  if (!conditions_file.empty()) {
    torch::Tensor c = npy_tensor(flowkit::io::read_npy_array(conditions_file), conditions_file);
    same_rows(c, conditions_file);
    if (c.dim() > 2) throw flowkit::Error("'" + conditions_file + "': conditions must be [N] or [N, c]");
    d.condition = (c.dim() == 1 ? c.unsqueeze(1) : c).to(torch::kFloat);
    check_finite(d.condition, "'" + conditions_file + "'");
  }
  return d;
}

namespace {
// Per-element mean and population variance in double, merged over chunks of rows (Chan et
// al.'s update): no double copy of the whole data set.
std::pair<torch::Tensor, torch::Tensor> chunked_mean_var(const torch::Tensor& x) {
  const int64_t n = x.size(0), chunk = 16384;
  torch::Tensor mean, m2;
  int64_t seen = 0;
  for (int64_t s = 0; s < n; s += chunk) {
    torch::Tensor c = x.slice(0, s, std::min(n, s + chunk)).to(torch::kDouble);
    const int64_t k = c.size(0);
    torch::Tensor cm = c.mean(0), cm2 = (c - cm).pow(2).sum(0);
    if (seen == 0) {
      mean = cm, m2 = cm2;
    } else {
      torch::Tensor delta = cm - mean;
      const double total = static_cast<double>(seen + k);
      mean = mean + delta * (static_cast<double>(k) / total);
      m2 = m2 + cm2 + delta.pow(2) * (static_cast<double>(seen) * static_cast<double>(k) / total);
    }
    seen += k;
  }
  return {mean, m2 / static_cast<double>(n)};
}
}  // namespace

Normalization fit_normalization(const std::string& kind, const torch::Tensor& x) {
  Normalization n;
  n.kind = kind;
  const auto item = x.sizes().slice(1);
  if (kind == "standard") {
    auto [mean, var] = chunked_mean_var(x);
    n.shift = mean;
    n.scale = var.sqrt();
    n.scale = torch::where(n.scale > 1e-8, n.scale, torch::ones_like(n.scale));  // a constant element stays as it is
  } else if (kind == "global") {
    auto [mean, var] = chunked_mean_var(x.reshape({-1, 1}));
    n.shift = mean.reshape({}).expand(item).clone();
    const double s = var.sqrt().item<double>();
    n.scale = torch::full(item, s > 1e-8 ? s : 1.0, torch::kDouble);
  } else if (kind == "minmax") {
    torch::Tensor lo = std::get<0>(x.min(0)).to(torch::kDouble), hi = std::get<0>(x.max(0)).to(torch::kDouble);
    n.shift = (lo + hi) / 2;
    n.scale = torch::where(hi - lo > 1e-8, (hi - lo) / 2, torch::ones_like(lo));
  } else if (kind == "none") {
    n.shift = torch::zeros(item, torch::kDouble);
    n.scale = torch::ones(item, torch::kDouble);
  } else {
    throw flowkit::Error("unknown normalisation '" + kind + "'");
  }
  n.shift = n.shift.to(torch::kFloat).contiguous();
  n.scale = n.scale.to(torch::kFloat).contiguous();
  return n;
}

// ---- the domain ---------------------------------------------------------------------------

TensorDomain::TensorDomain(TensorDomainOptions o) : options_(std::move(o)), device_(options_.device) {
  const std::string& file = options_.file;
  const bool csv = fs::path(file).extension() == ".csv" || fs::path(file).extension() == ".CSV";
  if (csv && (!options_.labels_file.empty() || !options_.conditions_file.empty()))
    throw flowkit::Error("'" + file + "' is a CSV file: give its labels and conditions as columns (label_column, condition_columns)");
  if (!csv && (!options_.label_column.empty() || !options_.condition_columns.empty()))
    throw flowkit::Error("'" + file + "' is not a CSV file: give its labels and conditions as .npy files (labels_file, conditions_file)");
  TensorData d = csv ? read_tensor_csv(file, options_.label_column, options_.condition_columns)
                     : read_tensor_npy(file, options_.labels_file, options_.conditions_file);
  check_finite(d.x, "'" + file + "'");
  if (d.condition.defined()) check_finite(d.condition, "'" + file + "' (conditions)");
  const int64_t n = d.x.size(0);
  if (d.x[0].numel() == 0) throw flowkit::Error("'" + file + "': its items hold no values (shape " + c10::str(d.x.sizes()) + ")");
  if (d.condition.defined() && d.condition.size(1) == 0) throw flowkit::Error("the conditions of '" + file + "' have no columns");
  if (!options_.item_shape.empty()) {
    int64_t want = 1, have = d.x[0].numel();
    for (int64_t s : options_.item_shape) want *= s;
    if (want != have)
      throw flowkit::Error("item_shape " + c10::str(c10::IntArrayRef(options_.item_shape)) + " holds " + std::to_string(want) +
                           " values, but an item of '" + file + "' has " + std::to_string(have));
    std::vector<int64_t> shape{n};
    shape.insert(shape.end(), options_.item_shape.begin(), options_.item_shape.end());
    d.x = d.x.reshape(shape);
  }
  item_shape_.assign(d.x.sizes().begin() + 1, d.x.sizes().end());
  if (n < 2) throw flowkit::Error("'" + file + "' holds " + std::to_string(n) + " item; need at least 2 (training and held-out)");
  Split split = options_.test_rows_file.empty() ? seeded_split(n, options_.test_fraction, options_.split_seed)
                                                : split_from_rows(n, read_row_list(options_.test_rows_file), options_.test_rows_file, options_.split_seed);
  if (split.test.size(0) == 0)
    throw flowkit::Error("no held-out rows: set test_fraction > 0 or test_rows (the metrics need a reference)");
  auto take = [](const torch::Tensor& t, const torch::Tensor& idx) { return t.defined() ? t.index_select(0, idx).contiguous() : t; };
  // The data is kept once, normalised; a restored normalisation re-maps it (restore_state).
  train_x_ = take(d.x, split.train);
  test_x_ = take(d.x, split.test);
  d.x = torch::Tensor();
  data_min_ = train_x_.min().item<double>();
  data_max_ = train_x_.max().item<double>();
  norm_ = fit_normalization(options_.normalize, train_x_);
  train_x_.sub_(norm_.shift).div_(norm_.scale);
  test_x_.sub_(norm_.shift).div_(norm_.scale);
  if (d.condition.defined()) {
    train_c_ = take(d.condition, split.train);
    test_c_ = take(d.condition, split.test);
    condition_norm_ = fit_normalization("standard", train_c_);
    train_c_ = condition_norm_.apply(train_c_);
    test_c_ = condition_norm_.apply(test_c_);
  }
  if (d.labels.defined()) num_classes_ = d.labels.max().item<int64_t>() + 1;
  train_y_ = take(d.labels, split.train);
  test_y_ = take(d.labels, split.test);
  columns_.columns = d.columns;
  columns_.condition_columns = d.condition_columns;
  columns_.label_column = d.label_column;
}

flowkit::io::TensorDict TensorDomain::persistent_state() const {
  flowkit::io::TensorDict s{{"shift", norm_.shift}, {"scale", norm_.scale}};
  if (condition_norm_.shift.defined()) {
    s.emplace_back("condition_shift", condition_norm_.shift);
    s.emplace_back("condition_scale", condition_norm_.scale);
  }
  return s;
}

void TensorDomain::restore_state(const flowkit::io::TensorDict& state) {
  auto get = [&](const std::string& key, const torch::Tensor& like) {
    const torch::Tensor* t = flowkit::io::find_tensor(state, key);
    if (!t) throw flowkit::Error("the normalisation of '" + options_.file + "' has no '" + key + "'");
    if (!t->sizes().equals(like.sizes()))
      throw flowkit::Error("the saved normalisation has shape " + c10::str(t->sizes()) + ", but items of '" + options_.file +
                           "' now have " + c10::str(like.sizes()));
    return t->to(torch::kFloat).contiguous();
  };
  Normalization x = norm_, c = condition_norm_;  // all checked before any is replaced
  x.shift = get("shift", norm_.shift);
  x.scale = get("scale", norm_.scale);
  if (c.shift.defined()) {
    c.shift = get("condition_shift", condition_norm_.shift);
    c.scale = get("condition_scale", condition_norm_.scale);
  }
  // In place: data = (old.undo(data) - new.shift) / new.scale, without a second copy.
  auto remap = [](torch::Tensor& data, const Normalization& from, const Normalization& to) {
    data.mul_(from.scale).add_(from.shift).sub_(to.shift).div_(to.scale);
  };
  remap(train_x_, norm_, x);
  remap(test_x_, norm_, x);
  if (c.shift.defined()) {
    remap(train_c_, condition_norm_, c);
    remap(test_c_, condition_norm_, c);
  }
  norm_ = x;
  condition_norm_ = c;
}

Batch TensorDomain::rows(const torch::Tensor& x, const torch::Tensor& labels, const torch::Tensor& cond,
                         const torch::Tensor& idx) const {
  Batch b;
  b.set("x", x.index_select(0, idx).to(device_));
  if (labels.defined()) b.set("label", labels.index_select(0, idx).to(device_));
  if (cond.defined()) b.set("condition", cond.index_select(0, idx).to(device_));
  return b;
}

Batch TensorDomain::train_batch(int64_t n, torch::Generator& gen) {
  return rows(train_x_, train_y_, train_c_, flowkit::random::randint(0, train_x_.size(0), {n}, gen));
}

Batch TensorDomain::reference(int64_t n, torch::Generator&) {
  return rows(test_x_, test_y_, test_c_, torch::arange(std::min(n, test_x_.size(0)), torch::kLong));
}

flowkit::Conditioning TensorDomain::sample_conditions(int64_t first, int64_t n, torch::Generator&) const {
  flowkit::Conditioning c;
  if (!test_y_.defined() && !test_c_.defined()) return c;
  torch::Tensor idx = paired_rows(first, n, test_x_.size(0));
  if (test_y_.defined()) c.set("label", test_y_.index_select(0, idx).to(device_));
  if (test_c_.defined()) c.set("condition", test_c_.index_select(0, idx).to(device_));
  return c;
}

std::map<std::string, std::vector<int64_t>> TensorDomain::condition_shapes() const {
  std::map<std::string, std::vector<int64_t>> s;
  if (test_y_.defined()) s["label"] = {};
  if (test_c_.defined()) s["condition"] = {test_c_.size(1)};
  return s;
}

std::vector<std::string> TensorDomain::metric_names() const {
  return {"energy_distance", "mmd_rbf", "sliced_w2", "mean_error", "std_error", "nn_train_distance"};
}

nlohmann::json TensorDomain::evaluate(const Batch& generated, const Batch& reference, const std::vector<std::string>& metrics,
                                      torch::Generator& gen) const {
  torch::Tensor x = generated.at("x").detach().to(torch::kCPU, torch::kDouble).reshape({generated.at("x").size(0), -1});
  torch::Tensor y = reference.at("x").detach().to(torch::kCPU, torch::kDouble).reshape({reference.at("x").size(0), -1});
  nlohmann::json out = nlohmann::json::object();
  for (const auto& m : metrics) {
    if (auto d = sample_distance(m, x, y, options_.projections, gen)) out[m] = *d;
    // Root mean square over features of the difference of per-feature means / stds.
    else if (m == "mean_error") out[m] = (x.mean(0) - y.mean(0)).pow(2).mean().sqrt().item<double>();
    else if (m == "std_error") out[m] = (x.std(0) - y.std(0)).pow(2).mean().sqrt().item<double>();
    else if (m == "nn_train_distance") out[m] = nn_train_distance(x, train_subset(train_x_, 10000).reshape({-1, x.size(1)}));
    else unknown_metric("tensor", m, metric_names());
  }
  return out;
}

std::vector<std::string> TensorDomain::write(const Batch& samples, const std::string& dir, const std::string& stem) const {
  torch::Tensor x = norm_.undo(samples.at("x").detach().to(torch::kCPU, torch::kFloat)).contiguous();
  std::vector<std::string> paths;
  const std::string npy = (fs::path(dir) / (stem + ".npy")).string();
  flowkit::io::write_npy(npy, x.data_ptr<float>(), std::vector<int64_t>(x.sizes().begin(), x.sizes().end()));
  paths.push_back(npy);
  torch::Tensor labels = samples.has("label") ? samples.at("label").to(torch::kCPU, torch::kLong).reshape({-1}).contiguous() : torch::Tensor();
  if (labels.defined() && num_classes_ > 0) {
    const std::string f = (fs::path(dir) / (stem + "_labels.npy")).string();
    flowkit::io::write_npy_int64(f, labels.data_ptr<int64_t>(), {labels.size(0)});
    paths.push_back(f);
  }
  const bool csv = !columns_.columns.empty();
  if (csv) {
    torch::Tensor flat = x.reshape({x.size(0), -1}).to(torch::kDouble);
    torch::Tensor cond = samples.has("condition") && condition_norm_.shift.defined()
                             ? condition_norm_.undo(samples.at("condition").to(torch::kCPU, torch::kFloat)).to(torch::kDouble)
                             : torch::Tensor();
    std::ostringstream text;
    text.precision(9);
    std::string head;
    for (const auto& c : columns_.columns) head += (head.empty() ? "" : ",") + c;
    if (labels.defined() && !columns_.label_column.empty()) head += "," + columns_.label_column;
    if (cond.defined())
      for (const auto& c : columns_.condition_columns) head += "," + c;
    text << head << "\n";
    auto a = flat.accessor<double, 2>();
    for (int64_t i = 0; i < flat.size(0); ++i) {
      for (int64_t j = 0; j < flat.size(1); ++j) text << (j ? "," : "") << a[i][j];
      if (labels.defined() && !columns_.label_column.empty()) text << "," << labels[i].item<int64_t>();
      if (cond.defined())
        for (int64_t j = 0; j < cond.size(1); ++j) text << "," << cond[i][j].item<double>();
      text << "\n";
    }
    const std::string f = (fs::path(dir) / (stem + ".csv")).string();
    flowkit::io::write_file_atomic(f, text.str());
    paths.push_back(f);
  }
  if (item_shape_.size() == 3 && (item_shape_[0] == 1 || item_shape_[0] == 3)) {
    // Images: the training data's range (after the undo) spans the gray levels.
    const double lo = data_min_, hi = data_max_;
    torch::Tensor img = (x - lo) / std::max(hi - lo, 1e-12) * 255.0;
    const std::string f = (fs::path(dir) / (stem + ".png")).string();
    write_image_grid_png(f, img, 10, static_cast<int>(std::max<int64_t>(1, 64 / std::max<int64_t>(1, item_shape_[1]))));
    paths.push_back(f);
  }
  return paths;
}

// ---- the factory --------------------------------------------------------------------------

namespace {
std::vector<std::string> string_array(const flowkit::Config& cfg, const std::string& key) {
  std::vector<std::string> out;
  for (const auto& e : cfg.get<nlohmann::json>(key)) {
    if (!e.is_string()) cfg.fail(key, "expected an array of column names, found an element " + e.dump());
    out.push_back(e.get<std::string>());
  }
  return out;
}
void must_exist(const flowkit::Config& cfg, const std::string& key) {
  const std::string f = cfg.get<std::string>(key);
  if (!f.empty() && !fs::is_regular_file(f)) cfg.fail(key, "no such file: '" + f + "'");
}
}  // namespace

std::unique_ptr<flowkit::Component> make_tensor_domain(const flowkit::Config& cfg, const flowkit::BuildContext& ctx) {
  TensorDomainOptions o;
  for (const char* key : {"file", "labels_file", "conditions_file", "test_rows"}) must_exist(cfg, key);
  o.file = cfg.get<std::string>("file");
  o.labels_file = cfg.get<std::string>("labels_file");
  o.conditions_file = cfg.get<std::string>("conditions_file");
  o.label_column = cfg.get<std::string>("label_column");
  o.condition_columns = string_array(cfg, "condition_columns");
  o.test_rows_file = cfg.get<std::string>("test_rows");
  if (auto shape = cfg.optional<nlohmann::json>("item_shape")) o.item_shape = positive_integers(cfg, "item_shape", *shape);
  o.test_fraction = cfg.get<double>("test_fraction");
  o.split_seed = static_cast<uint64_t>(cfg.get<int64_t>("split_seed"));
  o.normalize = cfg.get<std::string>("normalize");
  o.projections = cfg.get<int64_t>("projections");
  o.device = ctx.device;
  return located_at(cfg, "file", [&]() -> std::unique_ptr<flowkit::Component> { return std::make_unique<TensorDomain>(o); });
}

}  // namespace standard
