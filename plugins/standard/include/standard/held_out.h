// standard/held_out.h — what the user-data domains (tensor, image_folder) share: the held-out
// split, the order in which held-out items give their conditions to generated items, and the
// image-grid writer.
#pragma once
#include <torch/torch.h>

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "flowkit/io.h"

namespace standard {

// Row indices [0, n) split by a seeded permutation: round(fraction n) held-out rows (at least
// one when fraction > 0 and n > 1), the rest for training. Training rows are sorted; held-out
// rows are in the permutation's order, so the first n of them (reference(n)) are a random
// sample even when the data is stored class by class.
struct Split {
  torch::Tensor train, test;  // int64
};
Split seeded_split(int64_t n, double test_fraction, uint64_t seed);
// The split from a list of held-out rows (each in [0, n), no repeats), the held-out rows put
// in a random order drawn from `seed`; `file` names the list in errors.
Split split_from_rows(int64_t n, const torch::Tensor& test_rows, const std::string& file, uint64_t seed);
// `rows` in a random order drawn from `seed`.
torch::Tensor shuffled(const torch::Tensor& rows, uint64_t seed);
// At most `max` rows of `x`, evenly strided over all of them (every class of sorted data).
torch::Tensor train_subset(const torch::Tensor& x, int64_t max);
// Reads held-out row indices from an integer .npy or a text file of one integer a line.
torch::Tensor read_row_list(const std::string& file);

// A .npy array as a tensor of its own dtype (unsigned 16-64 bit widened to int64), C order.
torch::Tensor npy_tensor(const flowkit::io::NpyArray& array, const std::string& file);

// Generated item `first + i` takes the conditions (label, condition vector) of held-out item
// (first + i) mod n_test, and reference(n) returns held-out items 0..n-1 in the same order:
// the samples are then paired with the reference and follow its class frequencies.
torch::Tensor paired_rows(int64_t first, int64_t n, int64_t n_test);

// The SDK's two-sample distances by name (energy_distance, mmd_rbf, sliced_w2) of rows x
// against rows y; nullopt for any other name (the domain's own metrics).
std::optional<double> sample_distance(const std::string& name, const torch::Tensor& x, const torch::Tensor& y,
                                      int64_t projections, torch::Generator& gen);
// Throws "<domain>: unknown metric '<metric>' (available: ...)".
[[noreturn]] void unknown_metric(const std::string& domain, const std::string& metric, const std::vector<std::string>& available);

// A grid (up to columns x columns) of images [N, C, H, W], C = 1 or 3, values 0..255 (clamped),
// each cell scaled up by `scale`, on a gray background.
void write_image_grid_png(const std::string& path, const torch::Tensor& images, int64_t columns = 10, int scale = 1);

}  // namespace standard
