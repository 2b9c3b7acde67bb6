// standard/domains.h — the toy 2-D and the 8x8 digits domains, their samplers and writers.
#pragma once
#include <torch/torch.h>

#include <memory>
#include <string>
#include <vector>

#include "flowkit/config.h"
#include "flowkit/domain.h"
#include "flowkit/registry.h"

namespace standard {

// ---- toy 2-D ----------------------------------------------------------------------------
// Datasets (float32 [n, 2], all within about [-4.5, 4.5]^2):
//  8gaussians   : 8 equal modes at radius 2*sqrt(2), angles k pi/4, std 0.5/sqrt(2)
//  moons        : two interleaved half circles (noise 0.1), scaled by 2, shifted (-1, -0.2)
//  checkerboard : uniform on the 8 black squares of a 4x4 board of side-2 squares in [-4,4]^2
//  spirals      : two opposite spirals (theta (-cos theta, sin theta) + U[0,0.5)^2) / 3, theta =
//                 3 pi sqrt(U), plus N(0, 0.1^2) noise
//  rings        : 4 equally likely circles, radii 0.75, 1.5, 2.25, 3, radial noise std 0.08
const std::vector<std::string>& toy2d_datasets();
torch::Tensor sample_toy2d(const std::string& dataset, int64_t n, torch::Generator& gen);
// Known modes used by mode_coverage/mode_precision (8gaussians and rings only).
torch::Tensor eight_gaussians_centers();  // [8, 2] float64
const std::vector<double>& rings_radii();
constexpr double kEightGaussiansModeRadius = 1.0;  // ~2.8 std; modes are 2.16 apart
constexpr double kRingsModeRadius = 0.25;          // ~3 std; rings are 0.75 apart
constexpr double kModeMinShare = 0.25;             // covered: >= 25% of its fair share

class Toy2dDomain : public flowkit::Domain {
 public:
  Toy2dDomain(std::string dataset, int64_t projections, std::string device);
  std::vector<int64_t> item_shape() const override { return {2}; }
  flowkit::Batch train_batch(int64_t n, torch::Generator& gen) override;
  flowkit::Batch reference(int64_t n, torch::Generator& gen) override;  // fresh draws
  std::vector<std::string> metric_names() const override;
  nlohmann::json evaluate(const flowkit::Batch& generated, const flowkit::Batch& reference,
                          const std::vector<std::string>& metrics, torch::Generator& gen) const override;
  // <stem>.npy (float32 [N, 2]) and <stem>.png (512x512 scatter of [-4.5, 4.5]^2).
  std::vector<std::string> write(const flowkit::Batch& samples, const std::string& dir,
                                 const std::string& stem) const override;
  const std::string& dataset() const { return dataset_; }

 private:
  std::string dataset_;
  int64_t projections_;
  torch::Device device_;
};

// ---- digits -----------------------------------------------------------------------------
struct DigitsData {
  torch::Tensor pixels;  // [N, 64] int64, 0..16
  torch::Tensor labels;  // [N] int64, 0..9
};
// Reads the gzip CSV (65 integers a row); throws flowkit::Error naming the file and line.
DigitsData load_digits_csv_gz(const std::string& file);
constexpr int64_t kDigitsTestRows = 297;  // the last 297 rows are the held-out split

// The frozen digits classifier of the FD-digits metric: an MLP 64 -> 256 -> 128 -> 10 (ReLU) on
// pixels scaled to [-1, 1]; features() are the 128 penultimate activations. Weights live in a
// torch::pickle_save'd dict name -> tensor ("w1", "b1", "w2", "b2", "w3", "b3"), float64.
struct DigitsClassifier {
  torch::Tensor w1, b1, w2, b2, w3, b3;
  bool loaded() const { return w1.defined(); }
  torch::Tensor features(const torch::Tensor& x) const;  // [n, 64] -> [n, 128] float64
  torch::Tensor logits(const torch::Tensor& x) const;    // [n, 64] -> [n, 10] float64
};
DigitsClassifier load_digits_classifier(const std::string& file);  // throws flowkit::Error
void save_digits_classifier(const DigitsClassifier& c, const std::string& file);
// Trains the classifier reproducibly (float64, CPU, Adam lr 1e-3, weight decay 1e-4, minibatches
// of 128, `steps` steps, augmentation: random one-pixel shifts and Gaussian pixel noise 0.1; every
// draw from a generator seeded with `seed`).
DigitsClassifier train_digits_classifier(const torch::Tensor& x, const torch::Tensor& labels, uint64_t seed,
                                         int64_t steps = 6000);

// Frechet distance between Gaussians fitted to two feature sets ([n, d], n >= 2), in float64:
// |mu_a - mu_b|^2 + Tr(C_a + C_b - 2 (C_a^1/2 C_b C_a^1/2)^1/2), square roots by symmetric
// eigendecomposition (negative round-off eigenvalues clamped to 0).
double frechet_distance(const torch::Tensor& features_a, const torch::Tensor& features_b);
double frechet_distance_stats(const torch::Tensor& mu_a, const torch::Tensor& cov_a, const torch::Tensor& mu_b,
                              const torch::Tensor& cov_b);
// Entropy (nats) of the histogram of argmax classes; ln(10) = 2.303 for perfectly balanced classes.
double class_entropy(const torch::Tensor& logits);
// Mean over generated items of the Euclidean distance to the nearest training item.
double nn_train_distance(const torch::Tensor& generated, const torch::Tensor& train);

class DigitsDomain : public flowkit::Domain {
 public:
  // Loads `file`; rows [0, N-297) train, the last 297 are the reference split.
  // `classifier`: the FD-digits classifier file ("": digits_classifier.pt beside `file`); the
  // metrics fd_digits, class_entropy and classifier_confidence need it (loaded when present).
  // Those and nn_train_distance read generated items clamped to [-1, 1] (as images);
  // outlier_share is the share of generated items with max |x| > 3 before clamping.
  DigitsDomain(const std::string& file, int64_t projections, std::string device, std::string classifier);
  std::vector<int64_t> item_shape() const override { return {64}; }
  int64_t num_classes() const override { return 10; }
  flowkit::Batch train_batch(int64_t n, torch::Generator& gen) override;  // with replacement
  // min(n, 297) distinct held-out rows in random order.
  flowkit::Batch reference(int64_t n, torch::Generator& gen) override;
  flowkit::Conditioning sample_conditions(int64_t first, int64_t n, torch::Generator& gen) const override;
  std::vector<std::string> metric_names() const override;
  nlohmann::json evaluate(const flowkit::Batch& generated, const flowkit::Batch& reference,
                          const std::vector<std::string>& metrics, torch::Generator& gen) const override;
  // <stem>.npy (float32 [N, 64]) and <stem>.png (grid of up to 10x10 digits, 4x upscaled).
  std::vector<std::string> write(const flowkit::Batch& samples, const std::string& dir,
                                 const std::string& stem) const override;
  int64_t train_size() const { return train_x_.size(0); }
  int64_t test_size() const { return test_x_.size(0); }
  const DigitsClassifier& classifier() const;  // throws when its file is missing

 private:
  torch::Tensor train_x_, train_y_, test_x_, test_y_;  // float32 in [-1, 1] / int64
  std::string classifier_file_;
  DigitsClassifier classifier_;
  int64_t projections_;
  torch::Device device_;
};

// Image writers (exposed for tests): a scatter plot and a grid of 8x8 digits.
void write_scatter_png(const std::string& path, const torch::Tensor& points, int size = 512, double extent = 4.5);
void write_digit_grid_png(const std::string& path, const torch::Tensor& x, int64_t columns = 10, int scale = 4);

std::unique_ptr<flowkit::Component> make_toy2d(const flowkit::Config& cfg, const flowkit::BuildContext& ctx);
std::unique_ptr<flowkit::Component> make_digits(const flowkit::Config& cfg, const flowkit::BuildContext& ctx);

}  // namespace standard
