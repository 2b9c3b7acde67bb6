// The image-folder domain: PNG/JPEG files decoded once into one 8-bit store.
#include <torch/torch.h>

#include <algorithm>
#include <atomic>
#include <thread>
#include <cctype>
#include <filesystem>

#include "flowkit/error.h"
#include "flowkit/io.h"
#include "flowkit/progress.h"
#include "flowkit/random.h"
#include "standard/domains.h"
#include "standard/held_out.h"
#include "standard/image_folder.h"
#include "standard/util.h"

namespace standard {

namespace fs = std::filesystem;
using flowkit::Batch;

namespace {

bool is_image_name(const fs::path& p) {
  std::string ext = p.extension().string();
  std::transform(ext.begin(), ext.end(), ext.begin(), [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return ext == ".png" || ext == ".jpg" || ext == ".jpeg";
}
bool hidden(const fs::path& p) { return !p.filename().empty() && p.filename().string()[0] == '.'; }

std::vector<std::string> images_below(const fs::path& dir) {
  std::vector<std::string> out;
  for (auto it = fs::recursive_directory_iterator(dir, fs::directory_options::follow_directory_symlink);
       it != fs::recursive_directory_iterator(); ++it) {
    if (hidden(it->path())) {
      if (it->is_directory()) it.disable_recursion_pending();
      continue;
    }
    if (it->is_regular_file() && is_image_name(it->path())) out.push_back(it->path().string());
  }
  std::sort(out.begin(), out.end());
  return out;
}

}  // namespace

static ImageList list_images_of(const std::string& folder, bool labelled);

ImageList list_images(const std::string& folder, bool labelled) {
  try {
    return list_images_of(folder, labelled);
  } catch (const fs::filesystem_error& e) {  // permissions, a symlink loop
    throw flowkit::Error("cannot list the images of '" + folder + "': " + e.what());
  }
}

static ImageList list_images_of(const std::string& folder, bool labelled) {
  if (!fs::is_directory(folder)) throw flowkit::Error("'" + folder + "' is not a folder");
  ImageList list;
  if (!labelled) {
    list.files = images_below(folder);
  } else {
    std::vector<std::string> stray;
    for (const auto& e : fs::directory_iterator(folder)) {
      if (hidden(e.path())) continue;
      if (e.is_directory()) list.classes.push_back(e.path().filename().string());
      else if (e.is_regular_file() && is_image_name(e.path())) stray.push_back(e.path().filename().string());
    }
    std::sort(list.classes.begin(), list.classes.end());
    if (list.classes.empty())
      throw flowkit::Error("'" + folder + "' has no class sub-folders; for a folder of unlabelled images set labels: \"none\"");
    if (!stray.empty())
      throw flowkit::Error("'" + folder + "' holds images outside the class sub-folders (e.g. '" + stray[0] +
                           "'): move them into a class folder, or set labels: \"none\"");
    for (size_t c = 0; c < list.classes.size(); ++c) {
      std::vector<std::string> files = images_below(fs::path(folder) / list.classes[c]);
      if (files.empty()) throw flowkit::Error("class folder '" + (fs::path(folder) / list.classes[c]).string() + "' holds no images");
      for (auto& f : files) {
        list.files.push_back(std::move(f));
        list.labels.push_back(static_cast<int64_t>(c));
      }
    }
  }
  if (list.files.empty()) throw flowkit::Error("'" + folder + "' holds no .png, .jpg or .jpeg images");
  return list;
}

void load_image_into(const std::string& file, int64_t channels, int64_t height, int64_t width, const std::string& resize,
                     uint8_t* out) {
  int w = 0, h = 0;
  std::vector<uint8_t> rgb = flowkit::io::read_image_rgb(file, &w, &h);
  torch::Tensor img = torch::from_blob(rgb.data(), {h, w, 3}, torch::kByte).permute({2, 0, 1});  // [3, h, w], a view
  torch::Tensor result;
  if (h == height && w == width) {
    result = img;
  } else {
    torch::Tensor src = img;
    if (resize == "crop") {  // the centred region of the target's aspect ratio
      const double scale = std::max(static_cast<double>(height) / h, static_cast<double>(width) / w);
      const int64_t ch = std::clamp<int64_t>(std::llround(height / scale), 1, h), cw = std::clamp<int64_t>(std::llround(width / scale), 1, w);
      const int64_t y0 = (h - ch) / 2, x0 = (w - cw) / 2;
      src = src.slice(1, y0, y0 + ch).slice(2, x0, x0 + cw);
    }
    torch::Tensor f = src.to(torch::kFloat).unsqueeze(0);
    namespace F = torch::nn::functional;
    // Area averaging when shrinking (no aliasing), bilinear when enlarging.
    const bool shrink = src.size(1) >= height && src.size(2) >= width;
    auto opts = F::InterpolateFuncOptions().size(std::vector<int64_t>{height, width});
    opts = shrink ? opts.mode(torch::kArea) : opts.mode(torch::kBilinear).align_corners(false);
    result = F::interpolate(f, opts).squeeze(0).round().clamp(0, 255);
  }
  torch::Tensor target = torch::from_blob(out, {channels, height, width}, torch::kByte);
  if (channels == 3) {
    target.copy_(result);
  } else {
    torch::Tensor f = result.to(torch::kFloat);
    target.copy_((0.299 * f[0] + 0.587 * f[1] + 0.114 * f[2]).round().clamp(0, 255).unsqueeze(0));
  }
}

// ---- the domain ---------------------------------------------------------------------------

namespace {

// Decodes every file of `list` into rows of `pixels` starting at `first`, on every core (the
// decoders keep no shared state; the torch resizing inside runs inline on each thread);
// returns for each file "" or why it failed, naming it.
std::vector<std::string> decode_all(const ImageList& list, torch::Tensor& pixels, int64_t first, const ImageFolderOptions& o) {
  std::vector<std::string> failures(list.files.size());
  const int64_t item = o.channels * o.height * o.width;
  uint8_t* base = pixels.data_ptr<uint8_t>();
  const int64_t n = static_cast<int64_t>(list.files.size()), chunk = 2048;
  const int64_t workers = std::clamp<int64_t>(std::thread::hardware_concurrency(), 1, 16);
  flowkit::Progress progress("decoding " + std::to_string(n) + " images", n);
  for (int64_t start = 0; start < n; start += chunk) {  // parallel within a chunk; progress between
    const int64_t end = std::min(n, start + chunk);
    std::atomic<int64_t> next{start};
    auto work = [&] {
      for (int64_t i = next++; i < end; i = next++) {
        try {
          load_image_into(list.files[i], o.channels, o.height, o.width, o.resize, base + (first + i) * item);
        } catch (const std::exception& e) {
          std::string why = e.what();
          why = why.substr(0, why.find('\n'));  // a c10 error's backtrace stays out
          failures[i] = why.find(list.files[i]) == std::string::npos ? "'" + list.files[i] + "': " + why : why;
        }
      }
    };
    std::vector<std::thread> pool;
    for (int64_t w = 1; w < std::min(workers, end - start); ++w) pool.emplace_back(work);
    work();
    for (auto& t : pool) t.join();
    progress.advance(end - start);
  }
  return failures;
}

}  // namespace

ImageFolderDomain::ImageFolderDomain(ImageFolderOptions o) : options_(std::move(o)), device_(options_.device) {
  ImageList train = list_images(options_.folder, options_.labelled);
  ImageList test;
  if (!options_.test_folder.empty()) {
    test = list_images(options_.test_folder, options_.labelled);
    if (test.classes != train.classes)
      throw flowkit::Error("the class folders of '" + options_.test_folder + "' differ from those of '" + options_.folder + "'");
  }
  classes_ = train.classes;
  const int64_t n_train_files = static_cast<int64_t>(train.files.size()), n = n_train_files + static_cast<int64_t>(test.files.size());
  // One uint8 store for all images, filled in place by the decoder: no float copy of the data set.
  pixels_ = torch::empty({n, options_.channels, options_.height, options_.width}, torch::kByte);
  std::vector<std::string> failures = decode_all(train, pixels_, 0, options_);
  if (!test.files.empty()) {
    std::vector<std::string> more = decode_all(test, pixels_, n_train_files, options_);
    failures.insert(failures.end(), more.begin(), more.end());
  }
  std::vector<int64_t> labels = train.labels;
  labels.insert(labels.end(), test.labels.begin(), test.labels.end());
  std::vector<int64_t> good;
  skipped_.rows = n;
  for (int64_t i = 0; i < n; ++i) {
    if (failures[i].empty()) {
      good.push_back(i);
      continue;
    }
    if (!options_.skip_bad_files)
      throw flowkit::Error(failures[i] + " (set skip_bad_files: true to leave such files out)");
    ++skipped_.skipped;
    if (skipped_.reasons.size() < 5) skipped_.reasons.push_back(failures[i]);
  }
  if (good.empty()) throw flowkit::Error("no image of '" + options_.folder + "' could be read");
  torch::Tensor good_t = torch::tensor(good, torch::kLong);
  if (skipped_.skipped > 0) {  // compacted in place (good is ascending): no second store
    const size_t item = static_cast<size_t>(options_.channels * options_.height * options_.width);
    uint8_t* base = pixels_.data_ptr<uint8_t>();
    for (size_t k = 0; k < good.size(); ++k)
      if (static_cast<int64_t>(k) != good[k]) std::memmove(base + k * item, base + static_cast<size_t>(good[k]) * item, item);
    pixels_ = pixels_.narrow(0, 0, static_cast<int64_t>(good.size()));
  }
  if (!labels.empty()) labels_ = torch::tensor(labels, torch::kLong).index_select(0, good_t);
  const int64_t kept = pixels_.size(0);
  if (!options_.test_folder.empty()) {
    torch::Tensor is_test = good_t >= n_train_files;
    train_idx_ = torch::nonzero(~is_test).reshape({-1});
    test_idx_ = shuffled(torch::nonzero(is_test).reshape({-1}), options_.split_seed);  // classes mixed in reference(n)
  } else {
    Split s = seeded_split(kept, options_.test_fraction, options_.split_seed);
    train_idx_ = s.train;
    test_idx_ = s.test;
  }
  if (test_idx_.size(0) == 0 || train_idx_.size(0) == 0)
    throw flowkit::Error("'" + options_.folder + "': " + std::to_string(kept) +
                         " images leave no training or no held-out images (test_fraction, test_folder)");
}

Batch ImageFolderDomain::rows(const torch::Tensor& idx) const {
  Batch b;
  // Scaled per batch: the store stays 8-bit.
  b.set("x", (pixels_.index_select(0, idx).to(device_).to(torch::kFloat) / 127.5 - 1.0));
  if (labels_.defined()) b.set("label", labels_.index_select(0, idx).to(device_));
  return b;
}

Batch ImageFolderDomain::train_batch(int64_t n, torch::Generator& gen) {
  return rows(train_idx_.index_select(0, flowkit::random::randint(0, train_idx_.size(0), {n}, gen)));
}

Batch ImageFolderDomain::reference(int64_t n, torch::Generator&) {
  return rows(test_idx_.slice(0, 0, std::min(n, test_idx_.size(0))));
}

flowkit::Conditioning ImageFolderDomain::sample_conditions(int64_t first, int64_t n, torch::Generator&) const {
  flowkit::Conditioning c;
  if (!labels_.defined()) return c;
  torch::Tensor idx = test_idx_.index_select(0, paired_rows(first, n, test_idx_.size(0)));
  c.set("label", labels_.index_select(0, idx).to(device_));
  return c;
}

std::vector<std::string> ImageFolderDomain::metric_names() const {
  return {"energy_distance", "mmd_rbf", "sliced_w2", "mean_error", "nn_train_distance", "outlier_share"};
}

nlohmann::json ImageFolderDomain::evaluate(const Batch& generated, const Batch& reference, const std::vector<std::string>& metrics,
                                           torch::Generator& gen) const {
  const torch::Tensor& raw = generated.at("x");
  // Read as images: clamped to the pixel range, as an 8-bit export would be.
  torch::Tensor x = raw.detach().to(torch::kCPU, torch::kDouble).reshape({raw.size(0), -1}).clamp(-1, 1);
  torch::Tensor y = reference.at("x").detach().to(torch::kCPU, torch::kDouble).reshape({reference.at("x").size(0), -1});
  nlohmann::json out = nlohmann::json::object();
  for (const auto& m : metrics) {
    if (auto d = sample_distance(m, x, y, options_.projections, gen)) out[m] = *d;
    else if (m == "mean_error") out[m] = (x.mean(0) - y.mean(0)).pow(2).mean().sqrt().item<double>();
    else if (m == "nn_train_distance") {
      // Against at most 10,000 training images spread over all of them: a float copy of a
      // large folder's whole store would undo the point of keeping it 8-bit.
      torch::Tensor idx = train_subset(train_idx_, 10000);
      torch::Tensor train = pixels_.index_select(0, idx).to(torch::kFloat).reshape({idx.size(0), -1}) / 127.5 - 1.0;
      out[m] = nn_train_distance(x.to(torch::kFloat), train);
    } else if (m == "outlier_share")
      out[m] = (std::get<0>(raw.detach().abs().reshape({raw.size(0), -1}).max(1)) > 3.0).to(torch::kDouble).mean().item<double>();
    else unknown_metric("image_folder", m, metric_names());
  }
  return out;
}

std::vector<std::string> ImageFolderDomain::write(const Batch& samples, const std::string& dir, const std::string& stem) const {
  torch::Tensor x = ((samples.at("x").detach().to(torch::kCPU, torch::kFloat) + 1.0) * 127.5).clamp(0, 255).contiguous();
  std::vector<std::string> paths;
  const std::string npy = (fs::path(dir) / (stem + ".npy")).string();
  flowkit::io::write_npy(npy, x.data_ptr<float>(), std::vector<int64_t>(x.sizes().begin(), x.sizes().end()));
  paths.push_back(npy);
  const std::string png = (fs::path(dir) / (stem + ".png")).string();
  write_image_grid_png(png, x, 10, static_cast<int>(std::max<int64_t>(1, 64 / options_.height)));
  paths.push_back(png);
  if (labels_.defined() && samples.has("label")) {
    torch::Tensor l = samples.at("label").to(torch::kCPU, torch::kLong).reshape({-1}).contiguous();
    const std::string f = (fs::path(dir) / (stem + "_labels.npy")).string();
    flowkit::io::write_npy_int64(f, l.data_ptr<int64_t>(), {l.size(0)});
    paths.push_back(f);
  }
  return paths;
}

flowkit::io::TensorDict ImageFolderDomain::persistent_state() const {
  std::string names;
  for (const auto& c : classes_) names += c + "\n";
  torch::Tensor t = torch::empty({static_cast<int64_t>(names.size())}, torch::kByte);
  std::copy(names.begin(), names.end(), t.data_ptr<uint8_t>());
  return {{"classes", t}};
}

void ImageFolderDomain::restore_state(const flowkit::io::TensorDict& state) {
  const torch::Tensor* t = flowkit::io::find_tensor(state, "classes");
  if (!t || t->scalar_type() != torch::kByte || t->dim() != 1) throw flowkit::Error("the saved class list is missing or damaged");
  torch::Tensor c = t->contiguous();
  const std::string saved(reinterpret_cast<const char*>(c.data_ptr<uint8_t>()), static_cast<size_t>(c.numel()));
  std::string now;
  for (const auto& name : classes_) now += name + "\n";
  if (saved != now)
    throw flowkit::Error("the run was trained on the classes [" + saved + "] but '" + options_.folder + "' now has [" + now +
                         "]: its labels would mean other classes");
}

// ---- the factory --------------------------------------------------------------------------

std::unique_ptr<flowkit::Component> make_image_folder(const flowkit::Config& cfg, const flowkit::BuildContext& ctx) {
  ImageFolderOptions o;
  o.folder = cfg.get<std::string>("folder");
  if (!fs::is_directory(o.folder)) cfg.fail("folder", "no such folder: '" + o.folder + "'");
  o.test_folder = cfg.get<std::string>("test_folder");
  if (!o.test_folder.empty() && !fs::is_directory(o.test_folder)) cfg.fail("test_folder", "no such folder: '" + o.test_folder + "'");
  o.labelled = cfg.get<std::string>("labels") == "folders";
  const std::vector<int64_t> size = positive_integers(cfg, "size", cfg.get<nlohmann::json>("size"));
  if (size.size() != 2 || size[0] > 4096 || size[1] > 4096)
    cfg.fail("size", "expected [height, width], two integers in [1, 4096], found " + cfg.get<nlohmann::json>("size").dump());
  o.height = size[0];
  o.width = size[1];
  o.channels = cfg.get<int64_t>("channels");
  if (o.channels == 2) cfg.fail("channels", "expected 1 (gray) or 3 (RGB), found 2");
  o.resize = cfg.get<std::string>("resize");
  o.test_fraction = cfg.get<double>("test_fraction");
  o.split_seed = static_cast<uint64_t>(cfg.get<int64_t>("split_seed"));
  o.skip_bad_files = cfg.get<bool>("skip_bad_files");
  o.projections = cfg.get<int64_t>("projections");
  o.device = ctx.device;
  return located_at(cfg, "folder", [&]() -> std::unique_ptr<flowkit::Component> { return std::make_unique<ImageFolderDomain>(o); });
}

}  // namespace standard
