// standard/image_folder.h — a user's folder of PNG/JPEG images: one sub-folder per class (the
// labels) or unlabelled, each image decoded once straight into an 8-bit [N, C, H, W] store at
// the configured size (resized, centre-cropped or stretched), scaled to [-1, 1] per batch.
#pragma once
#include <torch/torch.h>

#include <memory>
#include <string>
#include <vector>

#include "flowkit/capabilities/persistent_state.h"
#include "flowkit/capabilities/skipped_data.h"
#include "flowkit/config.h"
#include "flowkit/domain.h"
#include "flowkit/registry.h"

namespace standard {

// The image files of a folder: class folders (sorted names) or, unlabelled, every image below
// it; names end in .png, .jpg or .jpeg (any case); hidden files are skipped.
struct ImageList {
  std::vector<std::string> files;
  std::vector<int64_t> labels;       // index into classes; empty when unlabelled
  std::vector<std::string> classes;
};
ImageList list_images(const std::string& folder, bool labelled);

struct ImageFolderOptions {
  std::string folder, test_folder;
  bool labelled = true;
  int64_t height = 0, width = 0, channels = 3;
  std::string resize;  // crop | stretch
  double test_fraction = 0;
  uint64_t split_seed = 0;
  bool skip_bad_files = false;
  int64_t projections = 0;
  std::string device;
};

// Decodes `file` and resizes it to [channels, height, width] uint8 into `out` (contiguous).
// Downscaling averages the covered source pixels (area); upscaling is bilinear.
void load_image_into(const std::string& file, int64_t channels, int64_t height, int64_t width, const std::string& resize,
                     uint8_t* out);

class ImageFolderDomain : public flowkit::Domain, public flowkit::PersistentState, public flowkit::SkippedData {
 public:
  explicit ImageFolderDomain(ImageFolderOptions options);
  std::vector<int64_t> item_shape() const override { return {options_.channels, options_.height, options_.width}; }
  int64_t num_classes() const override { return static_cast<int64_t>(classes_.size()); }
  flowkit::Batch train_batch(int64_t n, torch::Generator& gen) override;  // with replacement
  flowkit::Batch reference(int64_t n, torch::Generator& gen) override;    // held-out items 0..n-1
  flowkit::Conditioning sample_conditions(int64_t first, int64_t n, torch::Generator& gen) const override;
  // On generated images clamped to [-1, 1]; nn_train_distance against the first 10,000
  // training images; outlier_share: the share with max |x| > 3 before clamping.
  std::vector<std::string> metric_names() const override;
  nlohmann::json evaluate(const flowkit::Batch& generated, const flowkit::Batch& reference,
                          const std::vector<std::string>& metrics, torch::Generator& gen) const override;
  // <stem>.npy: float32 [N, C, H, W] pixel values 0..255; <stem>.png: a grid of up to 10x10;
  // <stem>_labels.npy (int64) when labelled.
  std::vector<std::string> write(const flowkit::Batch& samples, const std::string& dir,
                                 const std::string& stem) const override;
  // The class names, so a reopened run refuses a folder whose classes have changed.
  flowkit::io::TensorDict persistent_state() const override;
  void restore_state(const flowkit::io::TensorDict& state) override;
  flowkit::SkippedRows skipped_rows() const override { return skipped_; }

  const torch::Tensor& pixels() const { return pixels_; }  // uint8 [N, C, H, W]: the only copy
  int64_t train_size() const { return train_idx_.size(0); }
  int64_t test_size() const { return test_idx_.size(0); }
  const std::vector<std::string>& classes() const { return classes_; }

 private:
  flowkit::Batch rows(const torch::Tensor& idx) const;
  ImageFolderOptions options_;
  std::vector<std::string> classes_;
  torch::Tensor pixels_, labels_, train_idx_, test_idx_;
  flowkit::SkippedRows skipped_;
  torch::Device device_;
};

std::unique_ptr<flowkit::Component> make_image_folder(const flowkit::Config& cfg, const flowkit::BuildContext& ctx);

}  // namespace standard
