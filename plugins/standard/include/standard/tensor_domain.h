// standard/tensor_domain.h — a user's own data from a .npy or .csv file: items of any shape,
// optional integer labels and continuous condition columns, a held-out split (a row list or a
// seeded fraction), and a normalisation computed on the training rows, saved with the run
// (persistent_state) and undone when samples are written.
#pragma once
#include <torch/torch.h>

#include <memory>
#include <string>
#include <vector>

#include "flowkit/capabilities/persistent_state.h"
#include "flowkit/config.h"
#include "flowkit/domain.h"
#include "flowkit/registry.h"

namespace standard {

// A table read from a .npy or .csv file.
struct TensorData {
  torch::Tensor x;          // float32 [N, ...]
  torch::Tensor labels;     // int64 [N] or undefined
  torch::Tensor condition;  // float32 [N, c] or undefined
  std::vector<std::string> columns, condition_columns;  // CSV: the data and condition column names
  std::string label_column;
};
// CSV: one item a row, comma-separated numbers; a first line with any non-number is the
// header (column names). `label_column` / `condition_columns` name columns (a header is then
// needed); the remaining columns are the item. Errors name the file, line and column.
TensorData read_tensor_csv(const std::string& file, const std::string& label_column,
                           const std::vector<std::string>& condition_columns);
// NPY: [N, ...] of any numeric dtype; labels [N] of integers and conditions [N] or [N, c] from
// their own .npy files ("" for none). Errors name the file.
TensorData read_tensor_npy(const std::string& file, const std::string& labels_file, const std::string& conditions_file);

// Per-element (standard), one scalar (global), to [-1, 1] per element (minmax), or none.
struct Normalization {
  std::string kind = "none";
  torch::Tensor shift, scale;  // float32, broadcast against one item; x_model = (x - shift) / scale
  torch::Tensor apply(const torch::Tensor& x) const { return (x - shift) / scale; }
  torch::Tensor undo(const torch::Tensor& x) const { return x * scale + shift; }
};
Normalization fit_normalization(const std::string& kind, const torch::Tensor& train_x);

struct TensorDomainOptions {
  std::string file, labels_file, conditions_file, label_column, test_rows_file;
  std::vector<std::string> condition_columns;
  std::vector<int64_t> item_shape;  // empty: the file's own
  double test_fraction = 0;
  uint64_t split_seed = 0;
  std::string normalize;
  int64_t projections = 0;
  std::string device;
};

class TensorDomain : public flowkit::Domain, public flowkit::PersistentState {
 public:
  explicit TensorDomain(TensorDomainOptions options);
  std::vector<int64_t> item_shape() const override { return item_shape_; }
  int64_t num_classes() const override { return num_classes_; }
  flowkit::Batch train_batch(int64_t n, torch::Generator& gen) override;  // with replacement
  flowkit::Batch reference(int64_t n, torch::Generator& gen) override;    // held-out items 0..n-1
  flowkit::Conditioning sample_conditions(int64_t first, int64_t n, torch::Generator& gen) const override;
  std::map<std::string, std::vector<int64_t>> condition_shapes() const override;
  // Distances in the normalised space the model works in (every feature on one scale);
  // nn_train_distance against at most 10,000 training items spread over the whole split.
  std::vector<std::string> metric_names() const override;
  nlohmann::json evaluate(const flowkit::Batch& generated, const flowkit::Batch& reference,
                          const std::vector<std::string>& metrics, torch::Generator& gen) const override;
  // <stem>.npy: float32 [N, ...item_shape] in the data's own units (normalisation undone);
  // <stem>_labels.npy (int64) when labelled; <stem>.csv (same columns as the input) for CSV
  // input; <stem>.png, a grid, when items are images [C, H, W] with C = 1 or 3.
  std::vector<std::string> write(const flowkit::Batch& samples, const std::string& dir,
                                 const std::string& stem) const override;
  flowkit::io::TensorDict persistent_state() const override;
  void restore_state(const flowkit::io::TensorDict& state) override;

  const Normalization& normalization() const { return norm_; }
  const Normalization& condition_normalization() const { return condition_norm_; }
  int64_t train_size() const { return train_x_.size(0); }
  int64_t test_size() const { return test_x_.size(0); }

 private:
  flowkit::Batch rows(const torch::Tensor& x, const torch::Tensor& labels, const torch::Tensor& cond,
                      const torch::Tensor& idx) const;
  TensorDomainOptions options_;
  TensorData columns_;  // names only (tensors moved into the splits)
  std::vector<int64_t> item_shape_;
  int64_t num_classes_ = 0;
  Normalization norm_, condition_norm_;
  // x and condition normalised by the current state (the data is held once).
  torch::Tensor train_x_, train_y_, train_c_, test_x_, test_y_, test_c_;
  double data_min_ = 0, data_max_ = 1;  // the training items' range, for image grids
  torch::Device device_;
};

std::unique_ptr<flowkit::Component> make_tensor_domain(const flowkit::Config& cfg, const flowkit::BuildContext& ctx);

}  // namespace standard
