// The toy 2-D and digits domains, their mode statistics and the image writers; the held-out
// splits and image grids the user-data domains share (standard/held_out.h).
#include <torch/torch.h>
#include <zlib.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>

#include "flowkit/error.h"
#include "flowkit/io.h"
#include "flowkit/random.h"
#include "flowkit/sample_metrics.h"
#include "flowkit/tensor_file.h"
#include "standard/domains.h"
#include "standard/held_out.h"
#include "standard/metrics.h"
#include "standard/util.h"

namespace standard {

namespace fs = std::filesystem;
using flowkit::Batch;

// ---- metrics ----------------------------------------------------------------------------

static torch::Tensor as_rows(const torch::Tensor& x) {
  return x.detach().to(torch::kCPU, torch::kDouble).reshape({x.size(0), -1}).contiguous();
}

static ModeStats mode_stats_from_distances(const torch::Tensor& d, double radius, double min_share) {
  const int64_t n = d.size(0), k = d.size(1);
  if (n < 1) throw flowkit::Error("mode statistics need at least one sample");
  auto [dmin, idx] = torch::min(d, 1);
  torch::Tensor near = dmin <= radius;
  torch::Tensor counts = torch::bincount(idx.masked_select(near), {}, k).to(torch::kDouble);
  ModeStats s;
  s.precision = near.to(torch::kDouble).mean().item<double>();
  s.coverage = (counts >= min_share * static_cast<double>(n) / static_cast<double>(k)).to(torch::kDouble).mean().item<double>();
  return s;
}

ModeStats mode_stats_points(const torch::Tensor& x, const torch::Tensor& centers, double radius, double min_share) {
  return mode_stats_from_distances(torch::cdist(as_rows(x), centers.to(torch::kDouble), 2.0, 2), radius, min_share);
}

ModeStats mode_stats_rings(const torch::Tensor& x, const std::vector<double>& radii, double radius, double min_share) {
  torch::Tensor r = as_rows(x).norm(2, 1, true);
  torch::Tensor d = (r - torch::tensor(radii, torch::kDouble).unsqueeze(0)).abs();
  return mode_stats_from_distances(d, radius, min_share);
}

// ---- writers ----------------------------------------------------------------------------

static std::vector<std::string> write_npy_of(const torch::Tensor& x_in, const std::string& dir, const std::string& stem) {
  torch::Tensor x = x_in.detach().to(torch::kCPU, torch::kFloat).contiguous();
  std::string path = (fs::path(dir) / (stem + ".npy")).string();
  flowkit::io::write_npy(path, x.data_ptr<float>(), std::vector<int64_t>(x.sizes().begin(), x.sizes().end()));
  return {path};
}

void write_scatter_png(const std::string& path, const torch::Tensor& points, int size, double extent) {
  std::vector<uint8_t> rgb(static_cast<size_t>(size) * size * 3, 255);
  auto put = [&](int px, int py, uint8_t r, uint8_t g, uint8_t b) {
    if (px < 0 || py < 0 || px >= size || py >= size) return;
    uint8_t* p = &rgb[(static_cast<size_t>(py) * size + px) * 3];
    p[0] = r, p[1] = g, p[2] = b;
  };
  auto to_px = [&](double v) { return static_cast<int>(std::floor((v + extent) / (2 * extent) * size)); };
  for (int i = 0; i < size; ++i) {  // light axes through the origin
    put(i, to_px(0.0), 220, 220, 220);
    put(to_px(0.0), i, 220, 220, 220);
  }
  torch::Tensor p = points.detach().to(torch::kCPU, torch::kDouble).reshape({points.size(0), -1}).contiguous();
  if (p.size(1) < 2) throw flowkit::Error("write_scatter_png needs 2-D points");
  auto a = p.accessor<double, 2>();
  for (int64_t i = 0; i < p.size(0); ++i) {
    if (!std::isfinite(a[i][0]) || !std::isfinite(a[i][1])) continue;
    int px = to_px(a[i][0]), py = to_px(-a[i][1]);
    for (int dy = 0; dy < 2; ++dy)
      for (int dx = 0; dx < 2; ++dx) put(px + dx, py + dy, 31, 119, 180);
  }
  flowkit::io::write_png_rgb(path, size, size, rgb);
}

void write_digit_grid_png(const std::string& path, const torch::Tensor& x_in, int64_t columns, int scale) {
  torch::Tensor x = x_in.detach().to(torch::kCPU, torch::kDouble).reshape({x_in.size(0), -1}).contiguous();
  if (x.size(1) != 64) throw flowkit::Error("write_digit_grid_png needs items of 64 pixels");
  const int64_t count = std::min<int64_t>(x.size(0), columns * columns);
  const int64_t cols = std::max<int64_t>(1, std::min(columns, count));
  const int64_t rows = std::max<int64_t>(1, (count + cols - 1) / cols);
  const int pad = 2, cell = 8 * scale;
  const int width = static_cast<int>(cols * (cell + pad) + pad), height = static_cast<int>(rows * (cell + pad) + pad);
  std::vector<uint8_t> rgb(static_cast<size_t>(width) * height * 3, 128);
  auto a = x.accessor<double, 2>();
  for (int64_t k = 0; k < count; ++k) {
    const int ox = static_cast<int>((k % cols) * (cell + pad) + pad), oy = static_cast<int>((k / cols) * (cell + pad) + pad);
    for (int py = 0; py < cell; ++py)
      for (int px = 0; px < cell; ++px) {
        double v = a[k][(py / scale) * 8 + px / scale];
        double g = std::isfinite(v) ? std::clamp((v + 1) / 2, 0.0, 1.0) : 0.0;
        uint8_t* p = &rgb[(static_cast<size_t>(oy + py) * width + ox + px) * 3];
        p[0] = p[1] = p[2] = static_cast<uint8_t>(std::lround(255 * g));
      }
  }
  flowkit::io::write_png_rgb(path, width, height, rgb);
}

// ---- evaluation shared by both domains --------------------------------------------------

static nlohmann::json evaluate_common(const std::string& domain, const std::vector<std::string>& available,
                                      const Batch& generated, const Batch& reference,
                                      const std::vector<std::string>& metrics, int64_t projections,
                                      torch::Generator& gen, const std::function<ModeStats(const torch::Tensor&)>& modes) {
  nlohmann::json out = nlohmann::json::object();
  const torch::Tensor& x = generated.at("x");
  const torch::Tensor& y = reference.at("x");
  std::optional<ModeStats> stats;
  for (const std::string& name : metrics) {
    if (std::find(available.begin(), available.end(), name) == available.end()) unknown_metric(domain, name, available);
    if (auto d = sample_distance(name, x, y, projections, gen)) out[name] = *d;
    else {
      if (!stats) stats = modes(x);
      out[name] = name == "mode_coverage" ? stats->coverage : stats->precision;
    }
  }
  return out;
}

// ---- toy 2-D ----------------------------------------------------------------------------

const std::vector<std::string>& toy2d_datasets() {
  static const std::vector<std::string> names{"8gaussians", "moons", "checkerboard", "spirals", "rings"};
  return names;
}

torch::Tensor eight_gaussians_centers() {
  torch::Tensor angle = torch::arange(8, torch::kDouble) * (M_PI / 4);
  return torch::stack({torch::cos(angle), torch::sin(angle)}, 1) * (2 * std::sqrt(2.0));
}

const std::vector<double>& rings_radii() {
  static const std::vector<double> radii{0.75, 1.5, 2.25, 3.0};
  return radii;
}

torch::Tensor sample_toy2d(const std::string& dataset, int64_t n, torch::Generator& gen) {
  const auto D = torch::TensorOptions().dtype(torch::kDouble);
  torch::Tensor out;
  if (dataset == "8gaussians") {
    torch::Tensor k = flowkit::random::randint(0, 8, {n}, gen);
    out = eight_gaussians_centers().index_select(0, k) + (0.5 / std::sqrt(2.0)) * flowkit::random::randn({n, 2}, gen, D);
  } else if (dataset == "moons") {
    torch::Tensor theta = M_PI * flowkit::random::rand({n}, gen, D);
    torch::Tensor lower = flowkit::random::randint(0, 2, {n}, gen).to(torch::kDouble);
    torch::Tensor px = torch::cos(theta) * (1 - lower) + (1 - torch::cos(theta)) * lower;
    torch::Tensor py = torch::sin(theta) * (1 - lower) + (0.5 - torch::sin(theta)) * lower;
    out = (torch::stack({px, py}, 1) + 0.1 * flowkit::random::randn({n, 2}, gen, D)) * 2 +
          torch::tensor({-1.0, -0.2}, D).unsqueeze(0);
  } else if (dataset == "checkerboard") {
    torch::Tensor x1 = flowkit::random::rand({n}, gen, D) * 4 - 2;
    torch::Tensor x2 = flowkit::random::rand({n}, gen, D) - flowkit::random::randint(0, 2, {n}, gen).to(torch::kDouble) * 2;
    x2 = x2 + torch::remainder(torch::floor(x1), 2);
    out = torch::stack({x1, x2}, 1) * 2;
  } else if (dataset == "spirals") {
    torch::Tensor theta = torch::sqrt(flowkit::random::rand({n}, gen, D)) * (3 * M_PI);
    torch::Tensor dx = -torch::cos(theta) * theta + flowkit::random::rand({n}, gen, D) * 0.5;
    torch::Tensor dy = torch::sin(theta) * theta + flowkit::random::rand({n}, gen, D) * 0.5;
    torch::Tensor sign = flowkit::random::randint(0, 2, {n}, gen).to(torch::kDouble) * 2 - 1;
    out = torch::stack({dx, dy}, 1) * sign.unsqueeze(1) / 3 + 0.1 * flowkit::random::randn({n, 2}, gen, D);
  } else if (dataset == "rings") {
    torch::Tensor r = torch::tensor(rings_radii(), D).index_select(0, flowkit::random::randint(0, 4, {n}, gen));
    torch::Tensor theta = 2 * M_PI * flowkit::random::rand({n}, gen, D);
    r = r + 0.08 * flowkit::random::randn({n}, gen, D);
    out = torch::stack({r * torch::cos(theta), r * torch::sin(theta)}, 1);
  } else {
    throw flowkit::Error("toy2d: unknown dataset '" + dataset + "'");
  }
  return out.to(torch::kFloat);
}

Toy2dDomain::Toy2dDomain(std::string dataset, int64_t projections, std::string device)
    : dataset_(std::move(dataset)), projections_(projections), device_(device) {}

Batch Toy2dDomain::train_batch(int64_t n, torch::Generator& gen) {
  Batch b;
  b.set("x", sample_toy2d(dataset_, n, gen).to(device_));
  return b;
}

Batch Toy2dDomain::reference(int64_t n, torch::Generator& gen) { return train_batch(n, gen); }

std::vector<std::string> Toy2dDomain::metric_names() const {
  std::vector<std::string> names{"energy_distance", "mmd_rbf", "sliced_w2"};
  if (dataset_ == "8gaussians" || dataset_ == "rings") {
    names.push_back("mode_coverage");
    names.push_back("mode_precision");
  }
  return names;
}

nlohmann::json Toy2dDomain::evaluate(const Batch& generated, const Batch& reference,
                                     const std::vector<std::string>& metrics, torch::Generator& gen) const {
  auto modes = [this](const torch::Tensor& x) {
    if (dataset_ == "8gaussians")
      return mode_stats_points(x, eight_gaussians_centers(), kEightGaussiansModeRadius, kModeMinShare);
    return mode_stats_rings(x, rings_radii(), kRingsModeRadius, kModeMinShare);
  };
  return evaluate_common("toy2d (" + dataset_ + ")", metric_names(), generated, reference, metrics, projections_, gen,
                         modes);
}

std::vector<std::string> Toy2dDomain::write(const Batch& samples, const std::string& dir,
                                            const std::string& stem) const {
  const torch::Tensor& x = samples.at("x");
  std::vector<std::string> paths = write_npy_of(x, dir, stem);
  std::string png = (fs::path(dir) / (stem + ".png")).string();
  write_scatter_png(png, x);
  paths.push_back(png);
  return paths;
}

std::unique_ptr<flowkit::Component> make_toy2d(const flowkit::Config& cfg, const flowkit::BuildContext& ctx) {
  std::string dataset = cfg.get<std::string>("dataset");
  int64_t projections = cfg.get<int64_t>("projections");
  return std::make_unique<Toy2dDomain>(dataset, projections, ctx.device);
}

// ---- digits -----------------------------------------------------------------------------

DigitsData load_digits_csv_gz(const std::string& file) {
  gzFile gz = gzopen(file.c_str(), "rb");
  if (!gz) throw flowkit::Error("digits: cannot open '" + file + "'");
  std::vector<int64_t> pixels, labels;
  char line[4096];
  int64_t lineno = 0;
  try {
    while (gzgets(gz, line, sizeof line)) {
      ++lineno;
      const char* p = line;
      while (*p == ' ' || *p == '\t') ++p;
      if (*p == '\n' || *p == '\r' || *p == '\0') continue;
      int64_t values[65];
      int count = 0;
      for (;;) {
        char* end = nullptr;
        long v = std::strtol(p, &end, 10);
        if (end == p) break;
        if (count == 65) { count = 66; break; }
        values[count++] = v;
        p = end;
        while (*p == ' ') ++p;
        if (*p != ',') break;
        ++p;
      }
      if (count != 65)
        throw flowkit::Error("digits: '" + file + "' line " + std::to_string(lineno) + ": expected 65 integers");
      for (int i = 0; i < 64; ++i)
        if (values[i] < 0 || values[i] > 16)
          throw flowkit::Error("digits: '" + file + "' line " + std::to_string(lineno) + ": pixel outside 0..16");
      if (values[64] < 0 || values[64] > 9)
        throw flowkit::Error("digits: '" + file + "' line " + std::to_string(lineno) + ": label outside 0..9");
      pixels.insert(pixels.end(), values, values + 64);
      labels.push_back(values[64]);
    }
  } catch (...) {
    gzclose(gz);
    throw;
  }
  int errnum = 0;
  const char* msg = gzerror(gz, &errnum);
  std::string error = (errnum != Z_OK && errnum != Z_STREAM_END) ? std::string(msg) : std::string();
  gzclose(gz);
  if (!error.empty()) throw flowkit::Error("digits: reading '" + file + "' failed: " + error);
  const int64_t n = static_cast<int64_t>(labels.size());
  if (n == 0) throw flowkit::Error("digits: '" + file + "' holds no rows");
  DigitsData d;
  d.pixels = torch::tensor(pixels, torch::kLong).reshape({n, 64});
  d.labels = torch::tensor(labels, torch::kLong);
  return d;
}

// ---- FD-digits: the frozen classifier and the Frechet distance ------------------------------

torch::Tensor DigitsClassifier::features(const torch::Tensor& x) const {
  torch::Tensor h = x.detach().to(torch::kCPU, torch::kDouble).reshape({x.size(0), -1});
  h = torch::relu(torch::addmm(b1, h, w1.t()));
  return torch::relu(torch::addmm(b2, h, w2.t()));
}

torch::Tensor DigitsClassifier::logits(const torch::Tensor& x) const { return torch::addmm(b3, features(x), w3.t()); }

DigitsClassifier load_digits_classifier(const std::string& file) {
  flowkit::io::TensorDict dict = flowkit::io::read_tensor_dict(file);
  auto get = [&](const char* k) {
    const torch::Tensor* t = flowkit::io::find_tensor(dict, k);
    if (!t) throw flowkit::Error("digits: '" + file + "' is not a digits classifier: it has no '" + k + "'");
    return t->to(torch::kDouble).contiguous();
  };
  DigitsClassifier c{get("w1"), get("b1"), get("w2"), get("b2"), get("w3"), get("b3")};
  const bool fits = c.w1.dim() == 2 && c.w1.size(1) == 64 && c.b1.dim() == 1 && c.b1.size(0) == c.w1.size(0) &&
                    c.w2.dim() == 2 && c.w2.size(1) == c.w1.size(0) && c.b2.dim() == 1 && c.b2.size(0) == c.w2.size(0) &&
                    c.w3.dim() == 2 && c.w3.size(0) == 10 && c.w3.size(1) == c.w2.size(0) && c.b3.dim() == 1 &&
                    c.b3.size(0) == 10;
  if (!fits) throw flowkit::Error("digits: '" + file + "' holds weights of unexpected shapes");
  return c;
}

void save_digits_classifier(const DigitsClassifier& c, const std::string& file) {
  flowkit::io::write_tensor_dict(file, {{"w1", c.w1}, {"b1", c.b1}, {"w2", c.w2}, {"b2", c.b2}, {"w3", c.w3}, {"b3", c.b3}});
}

// The 9 one-pixel shifts (background -1 shifted in) of images [n, 64]: [9, n, 64].
static torch::Tensor shifted_digits(const torch::Tensor& x) {
  torch::Tensor img = torch::constant_pad_nd(x.reshape({-1, 8, 8}), {1, 1, 1, 1}, -1.0);
  std::vector<torch::Tensor> out;
  for (int64_t dy = 0; dy < 3; ++dy)
    for (int64_t dx = 0; dx < 3; ++dx) out.push_back(img.slice(1, dy, dy + 8).slice(2, dx, dx + 8).reshape({-1, 64}));
  return torch::stack(out);
}

DigitsClassifier train_digits_classifier(const torch::Tensor& x_in, const torch::Tensor& labels, uint64_t seed,
                                         int64_t steps) {
  auto gen = at::detail::createCPUGenerator(seed);
  const auto D = torch::TensorOptions().dtype(torch::kDouble);
  auto init = [&](int64_t out, int64_t in) {
    const double bound = 1.0 / std::sqrt(static_cast<double>(in));
    return std::make_pair((torch::rand({out, in}, gen, D) * 2 - 1) * bound, (torch::rand({out}, gen, D) * 2 - 1) * bound);
  };
  auto [w1, b1] = init(256, 64);
  auto [w2, b2] = init(128, 256);
  auto [w3, b3] = init(10, 128);
  std::vector<torch::Tensor> params{w1, b1, w2, b2, w3, b3};
  for (auto& p : params) p.set_requires_grad(true);
  torch::optim::Adam opt(params, torch::optim::AdamOptions(1e-3).weight_decay(1e-4));
  torch::Tensor shifts = shifted_digits(x_in.to(torch::kDouble).reshape({x_in.size(0), -1}));  // [9, n, 64]
  torch::Tensor y = labels.to(torch::kLong);
  const int64_t n = y.size(0), batch = 128;
  for (int64_t step = 0; step < steps; ++step) {
    torch::Tensor idx = torch::randint(n, {batch}, gen, torch::kLong);
    torch::Tensor which = torch::randint(9, {batch}, gen, torch::kLong);
    torch::Tensor xb = shifts.index({which, idx}) + 0.1 * torch::randn({batch, 64}, gen, D);
    torch::Tensor h = torch::relu(torch::addmm(params[1], xb, params[0].t()));
    h = torch::relu(torch::addmm(params[3], h, params[2].t()));
    torch::Tensor loss = torch::nn::functional::cross_entropy(torch::addmm(params[5], h, params[4].t()), y.index_select(0, idx));
    opt.zero_grad();
    loss.backward();
    opt.step();
  }
  DigitsClassifier c;
  c.w1 = params[0].detach(), c.b1 = params[1].detach(), c.w2 = params[2].detach();
  c.b2 = params[3].detach(), c.w3 = params[4].detach(), c.b3 = params[5].detach();
  return c;
}

static torch::Tensor sqrt_psd(const torch::Tensor& c) {
  auto [evals, evecs] = torch::linalg::eigh(c, "L");
  return evecs.matmul(torch::diag(evals.clamp_min(0).sqrt())).matmul(evecs.t());
}

double frechet_distance_stats(const torch::Tensor& mu_a, const torch::Tensor& cov_a, const torch::Tensor& mu_b,
                              const torch::Tensor& cov_b) {
  torch::Tensor ca = cov_a.to(torch::kDouble), cb = cov_b.to(torch::kDouble);
  torch::Tensor sa = sqrt_psd(ca);
  torch::Tensor m = sa.matmul(cb).matmul(sa);
  m = (m + m.t()) / 2;  // symmetric up to round-off
  torch::Tensor evals = torch::linalg::eigvalsh(m, "L").clamp_min(0);
  const double mean_term = (mu_a.to(torch::kDouble) - mu_b.to(torch::kDouble)).pow(2).sum().item<double>();
  return mean_term + (ca.trace() + cb.trace()).item<double>() - 2 * evals.sqrt().sum().item<double>();
}

double frechet_distance(const torch::Tensor& a_in, const torch::Tensor& b_in) {
  torch::Tensor a = as_rows(a_in), b = as_rows(b_in);
  if (a.size(0) < 2 || b.size(0) < 2) throw flowkit::Error("frechet_distance needs at least 2 items on each side");
  auto stats = [](const torch::Tensor& f) {
    torch::Tensor mu = f.mean(0);
    torch::Tensor c = f - mu;
    return std::make_pair(mu, c.t().matmul(c) / static_cast<double>(f.size(0) - 1));
  };
  auto [ma, ca] = stats(a);
  auto [mb, cb] = stats(b);
  return frechet_distance_stats(ma, ca, mb, cb);
}

double class_entropy(const torch::Tensor& logits) {
  torch::Tensor counts = torch::bincount(logits.argmax(1).to(torch::kLong), {}, logits.size(1)).to(torch::kDouble);
  torch::Tensor p = counts / counts.sum();
  torch::Tensor nz = p.masked_select(p > 0);
  return -(nz * nz.log()).sum().item<double>();
}

double nn_train_distance(const torch::Tensor& generated, const torch::Tensor& train) {
  torch::Tensor a = as_rows(generated), b = as_rows(train);
  double total = 0;
  for (int64_t i = 0; i < a.size(0); i += 512) {
    torch::Tensor d = torch::cdist(a.slice(0, i, std::min(i + 512, a.size(0))), b);
    total += std::get<0>(d.min(1)).sum().item<double>();
  }
  return total / static_cast<double>(a.size(0));
}

DigitsDomain::DigitsDomain(const std::string& file, int64_t projections, std::string device, std::string classifier)
    : projections_(projections), device_(device) {
  classifier_file_ = classifier.empty() ? (fs::path(file).parent_path() / "digits_classifier.pt").string() : classifier;
  if (fs::exists(classifier_file_)) classifier_ = load_digits_classifier(classifier_file_);
  DigitsData d = load_digits_csv_gz(file);
  const int64_t n = d.labels.size(0);
  if (n <= kDigitsTestRows)
    throw flowkit::Error("digits: '" + file + "' has " + std::to_string(n) + " rows, need more than " +
                         std::to_string(kDigitsTestRows));
  torch::Tensor x = d.pixels.to(torch::kFloat) / 8 - 1;
  const int64_t split = n - kDigitsTestRows;
  train_x_ = x.slice(0, 0, split).contiguous();
  train_y_ = d.labels.slice(0, 0, split).contiguous();
  test_x_ = x.slice(0, split).contiguous();
  test_y_ = d.labels.slice(0, split).contiguous();
}

Batch DigitsDomain::train_batch(int64_t n, torch::Generator& gen) {
  torch::Tensor idx = flowkit::random::randint(0, train_x_.size(0), {n}, gen);
  Batch b;
  b.set("x", train_x_.index_select(0, idx).to(device_));
  b.set("label", train_y_.index_select(0, idx).to(device_));
  return b;
}

Batch DigitsDomain::reference(int64_t n, torch::Generator& gen) {
  torch::Tensor idx = flowkit::random::randperm(test_x_.size(0), gen).slice(0, 0, std::min(n, test_x_.size(0)));
  Batch b;
  b.set("x", test_x_.index_select(0, idx).to(device_));
  b.set("label", test_y_.index_select(0, idx).to(device_));
  return b;
}

flowkit::Conditioning DigitsDomain::sample_conditions(int64_t, int64_t n, torch::Generator& gen) const {
  flowkit::Conditioning c;
  c.set("label", flowkit::random::randint(0, 10, {n}, gen).to(device_));
  return c;
}

std::vector<std::string> DigitsDomain::metric_names() const {
  return {"energy_distance", "mmd_rbf", "sliced_w2", "fd_digits", "class_entropy", "classifier_confidence",
          "label_accuracy", "nn_train_distance", "outlier_share"};
}

const DigitsClassifier& DigitsDomain::classifier() const {
  if (!classifier_.loaded())
    throw flowkit::Error("digits: the FD-digits classifier '" + classifier_file_ +
                         "' is missing (retrain it with flowkit_train_digits_classifier, or pass `classifier`)");
  return classifier_;
}

nlohmann::json DigitsDomain::evaluate(const Batch& generated, const Batch& reference,
                                      const std::vector<std::string>& metrics, torch::Generator& gen) const {
  static const std::vector<std::string> own{"fd_digits", "class_entropy", "classifier_confidence", "label_accuracy",
                                            "nn_train_distance", "outlier_share"};
  std::vector<std::string> common;
  for (const auto& m : metrics)
    if (std::find(own.begin(), own.end(), m) == own.end()) common.push_back(m);
  nlohmann::json out = evaluate_common("digits", metric_names(), generated, reference, common, projections_, gen,
                                       [](const torch::Tensor&) -> ModeStats { throw flowkit::Error("digits: no modes"); });
  // Generated digits are read as images: clamped to the pixel range [-1, 1] (as an 8-bit
  // export would) before the classifier and the nearest-neighbour search see them.
  // outlier_share reports how many were far outside it (max |x| > 3) before clamping.
  const torch::Tensor& raw = generated.at("x");
  torch::Tensor x = raw.detach().to(torch::kCPU, torch::kFloat).clamp(-1, 1);
  for (const auto& m : metrics) {
    if (m == "fd_digits") out[m] = frechet_distance(classifier().features(x), classifier().features(reference.at("x")));
    else if (m == "class_entropy") out[m] = class_entropy(classifier().logits(x));
    else if (m == "classifier_confidence")
      out[m] = std::get<0>(torch::softmax(classifier().logits(x), 1).max(1)).mean().item<double>();
    else if (m == "label_accuracy") {
      // How often the frozen classifier reads the class each sample was asked for.
      if (!generated.has("label")) throw flowkit::Error("digits: label_accuracy needs samples with their requested 'label'");
      torch::Tensor asked = generated.at("label").to(torch::kCPU, torch::kLong).reshape({-1});
      out[m] = (classifier().logits(x).argmax(1) == asked).to(torch::kDouble).mean().item<double>();
    } else if (m == "nn_train_distance") out[m] = nn_train_distance(x, train_x_);
    else if (m == "outlier_share")
      out[m] = (std::get<0>(raw.detach().abs().reshape({raw.size(0), -1}).max(1)) > 3.0).to(torch::kDouble).mean().item<double>();
  }
  return out;
}

std::vector<std::string> DigitsDomain::write(const Batch& samples, const std::string& dir,
                                             const std::string& stem) const {
  const torch::Tensor& x = samples.at("x");
  std::vector<std::string> paths = write_npy_of(x, dir, stem);
  std::string png = (fs::path(dir) / (stem + ".png")).string();
  write_digit_grid_png(png, x);
  paths.push_back(png);
  return paths;
}

std::unique_ptr<flowkit::Component> make_digits(const flowkit::Config& cfg, const flowkit::BuildContext& ctx) {
  std::optional<std::string> file = cfg.optional<std::string>("file");
  int64_t projections = cfg.get<int64_t>("projections");
  std::optional<std::string> classifier = cfg.optional<std::string>("classifier");
  if (classifier && !fs::exists(*classifier)) cfg.fail("classifier", "no such file: '" + *classifier + "'");
  std::string path = file ? *file : (fs::path(ctx.plugin_dir) / "data" / "digits.csv.gz").string();
  if (!fs::exists(path))
    cfg.fail("file", file ? "no such file: '" + path + "'"
                          : "the digits data is not installed beside the plugin ('" + path +
                                "' is missing); pass its location as `file`");
  return located_at(cfg, "file", [&]() -> std::unique_ptr<flowkit::Component> {
    return std::make_unique<DigitsDomain>(path, projections, ctx.device, classifier.value_or(""));
  });
}

}  // namespace standard

// ---- held-out splits and image grids of the user-data domains -----------------------------

namespace standard {

Split seeded_split(int64_t n, double test_fraction, uint64_t seed) {
  int64_t n_test = static_cast<int64_t>(std::llround(test_fraction * static_cast<double>(n)));
  if (test_fraction > 0 && n > 1) n_test = std::clamp<int64_t>(n_test, 1, n - 1);
  auto gen = at::detail::createCPUGenerator(seed);
  torch::Tensor perm = torch::randperm(n, gen, torch::kLong);
  Split s;
  s.test = perm.slice(0, 0, n_test).contiguous();
  s.train = std::get<0>(perm.slice(0, n_test).sort());
  return s;
}

torch::Tensor shuffled(const torch::Tensor& rows, uint64_t seed) {
  auto gen = at::detail::createCPUGenerator(seed);
  return rows.index_select(0, torch::randperm(rows.size(0), gen, torch::kLong));
}

torch::Tensor train_subset(const torch::Tensor& x, int64_t max) {
  const int64_t n = x.size(0);
  if (n <= max) return x;
  const int64_t step = (n + max - 1) / max;
  return x.index_select(0, torch::arange(0, n, step, torch::kLong));
}

Split split_from_rows(int64_t n, const torch::Tensor& rows_in, const std::string& file, uint64_t seed) {
  torch::Tensor rows = rows_in.to(torch::kLong).reshape({-1});
  torch::Tensor held = torch::zeros({n}, torch::kBool);
  auto r = rows.accessor<int64_t, 1>();
  for (int64_t i = 0; i < rows.size(0); ++i) {
    if (r[i] < 0 || r[i] >= n)
      throw flowkit::Error("'" + file + "', entry " + std::to_string(i) + ": row " + std::to_string(r[i]) +
                           " is outside the data's " + std::to_string(n) + " rows");
    if (held[r[i]].item<bool>()) throw flowkit::Error("'" + file + "', entry " + std::to_string(i) + ": row " + std::to_string(r[i]) + " is listed twice");
    held[r[i]] = true;
  }
  if (rows.size(0) == 0 || rows.size(0) == n)
    throw flowkit::Error("'" + file + "' must hold some but not all of the " + std::to_string(n) + " rows");
  Split s;
  s.test = shuffled(torch::nonzero(held).reshape({-1}), seed);
  s.train = torch::nonzero(~held).reshape({-1});
  return s;
}

torch::Tensor read_row_list(const std::string& file) {
  if (fs::path(file).extension() == ".npy") {
    torch::Tensor rows = npy_tensor(flowkit::io::read_npy_array(file), file);
    if (rows.is_floating_point() || rows.scalar_type() == torch::kBool) throw flowkit::Error("'" + file + "': row indices must be integers");
    return rows.to(torch::kLong).reshape({-1});
  }
  std::ifstream in(file);
  if (!in) throw flowkit::Error("cannot open '" + file + "'");
  std::vector<int64_t> rows;
  std::string line;
  for (int64_t line_no = 1; std::getline(in, line); ++line_no) {
    const size_t b = line.find_first_not_of(" \t\r"), e = line.find_last_not_of(" \t\r");
    if (b == std::string::npos) continue;
    const std::string word = line.substr(b, e - b + 1);
    char* end = nullptr;
    errno = 0;
    const long long v = std::strtoll(word.c_str(), &end, 10);
    if (errno != 0 || end != word.c_str() + word.size())
      throw flowkit::Error("'" + file + "', line " + std::to_string(line_no) + ": '" + word.substr(0, 40) + "' is not a row index");
    rows.push_back(v);
  }
  return torch::tensor(rows, torch::kLong);
}

torch::Tensor npy_tensor(const flowkit::io::NpyArray& a, const std::string& file) {
  const std::vector<int64_t> shape = a.shape;
  torch::Tensor t;
  if (a.kind == 'u' && a.item_size > 1) {  // no unsigned 16/32/64-bit tensors in LibTorch: widen
    std::vector<int64_t> v(static_cast<size_t>(a.count()));
    for (size_t i = 0; i < v.size(); ++i) {
      uint64_t u = 0;
      std::memcpy(&u, a.data() + i * static_cast<size_t>(a.item_size), static_cast<size_t>(a.item_size));
      if (u > static_cast<uint64_t>(INT64_MAX)) throw flowkit::Error("'" + file + "': value " + std::to_string(u) + " is too large");
      v[i] = static_cast<int64_t>(u);
    }
    t = torch::tensor(v, torch::kLong);
  } else {
    torch::ScalarType type = torch::kFloat;
    switch (a.kind * 16 + a.item_size) {
      case 'f' * 16 + 4: type = torch::kFloat; break;
      case 'f' * 16 + 8: type = torch::kDouble; break;
      case 'i' * 16 + 1: type = torch::kChar; break;
      case 'i' * 16 + 2: type = torch::kShort; break;
      case 'i' * 16 + 4: type = torch::kInt; break;
      case 'i' * 16 + 8: type = torch::kLong; break;
      case 'u' * 16 + 1: type = torch::kByte; break;
      case 'b' * 16 + 1: type = torch::kBool; break;
      default: throw flowkit::Error("'" + file + "': unsupported dtype");
    }
    // Copied byte-wise: the data need not be aligned for its type in the file's buffer.
    t = torch::empty({a.count()}, type == torch::kBool ? torch::kByte : type);
    if (a.count() > 0) std::memcpy(t.data_ptr(), a.data(), static_cast<size_t>(a.count()) * static_cast<size_t>(a.item_size));
    if (type == torch::kBool) t = t != 0;  // any nonzero byte is true, as numpy reads it
  }
  if (a.fortran_order) {  // column-major: the reversed shape, transposed back
    std::vector<int64_t> reversed(shape.rbegin(), shape.rend()), dims;
    for (int64_t d = static_cast<int64_t>(shape.size()) - 1; d >= 0; --d) dims.push_back(d);
    return t.reshape(reversed).permute(dims).contiguous();
  }
  return t.reshape(shape);
}

std::optional<double> sample_distance(const std::string& name, const torch::Tensor& x, const torch::Tensor& y,
                                      int64_t projections, torch::Generator& gen) {
  if (name == "energy_distance") return flowkit::metrics::energy_distance(x, y);
  if (name == "mmd_rbf") return flowkit::metrics::mmd_rbf(x, y);
  if (name == "sliced_w2") return flowkit::metrics::sliced_w2(x, y, projections, gen);
  return std::nullopt;
}

void unknown_metric(const std::string& domain, const std::string& metric, const std::vector<std::string>& available) {
  std::string list;
  for (const auto& a : available) list += (list.empty() ? "" : ", ") + a;
  throw flowkit::Error(domain + ": unknown metric '" + metric + "' (available: " + list + ")");
}

torch::Tensor paired_rows(int64_t first, int64_t n, int64_t n_test) {
  if (n_test <= 0) throw flowkit::Error("the domain has no held-out items to pair samples with");
  return torch::remainder(torch::arange(first, first + n, torch::kLong), n_test);
}

void write_image_grid_png(const std::string& path, const torch::Tensor& images, int64_t columns, int scale) {
  if (images.dim() != 4 || (images.size(1) != 1 && images.size(1) != 3))
    throw flowkit::Error("write_image_grid_png needs images [N, C, H, W] with C = 1 or 3");
  const int64_t H = images.size(2), W = images.size(3);
  // At most ~16 M pixels in the grid, whatever the item size.
  scale = static_cast<int>(std::max<int64_t>(1, std::min<int64_t>(scale, 4096 / std::max(H, W))));
  const int64_t fit = std::max<int64_t>(1, (int64_t{1} << 24) / std::max<int64_t>(1, H * W * scale * scale));
  const int64_t count = std::min({images.size(0), columns * columns, fit});
  const int64_t cols = std::max<int64_t>(1, std::min(columns, count));
  const int64_t rows = std::max<int64_t>(1, (count + cols - 1) / cols);
  torch::Tensor x = images.slice(0, 0, count).detach().to(torch::kCPU, torch::kFloat);
  x = torch::nan_to_num(x, 0.0).clamp(0, 255).round().to(torch::kByte);
  if (x.size(1) == 1) x = x.expand({x.size(0), 3, H, W});
  x = x.permute({0, 2, 3, 1}).contiguous();  // [count, H, W, 3]
  const int pad = 2;
  const int64_t cell_h = H * scale, cell_w = W * scale;
  const int width = static_cast<int>(cols * (cell_w + pad) + pad), height = static_cast<int>(rows * (cell_h + pad) + pad);
  std::vector<uint8_t> rgb(static_cast<size_t>(width) * height * 3, 128);
  const uint8_t* src = x.data_ptr<uint8_t>();
  for (int64_t k = 0; k < count; ++k) {
    const int64_t ox = (k % cols) * (cell_w + pad) + pad, oy = (k / cols) * (cell_h + pad) + pad;
    for (int64_t py = 0; py < cell_h; ++py)
      for (int64_t px = 0; px < cell_w; ++px)
        std::memcpy(&rgb[static_cast<size_t>((oy + py) * width + ox + px) * 3],
                    src + ((k * H + py / scale) * W + px / scale) * 3, 3);
  }
  flowkit::io::write_png_rgb(path, width, height, rgb);
}

}  // namespace standard
