// Retrains the frozen classifier of the digits FD metric and writes it beside the data:
//   flowkit_train_digits_classifier data/digits/digits.csv.gz data/digits/digits_classifier.pt [seed]
// It trains on the training rows only (all but the last 297) and prints the held-out accuracy.
#include <torch/torch.h>

#include <cstdio>
#include <string>

#include "standard/domains.h"

int main(int argc, char** argv) {
  if (argc < 3) {
    std::fprintf(stderr, "usage: %s DIGITS_CSV_GZ OUT_PT [SEED]\n", argv[0]);
    return 2;
  }
  try {
    torch::set_num_threads(1);
    const uint64_t seed = argc > 3 ? std::stoull(argv[3]) : 0;
    standard::DigitsData d = standard::load_digits_csv_gz(argv[1]);
    torch::Tensor x = d.pixels.to(torch::kDouble) / 8 - 1;
    const int64_t split = x.size(0) - standard::kDigitsTestRows;
    auto c = standard::train_digits_classifier(x.slice(0, 0, split), d.labels.slice(0, 0, split), seed);
    auto acc = [&](int64_t a, int64_t b) {
      return (c.logits(x.slice(0, a, b)).argmax(1) == d.labels.slice(0, a, b)).to(torch::kDouble).mean().item<double>();
    };
    std::printf("train accuracy %.4f, held-out accuracy %.4f (%lld rows)\n", acc(0, split), acc(split, x.size(0)),
                static_cast<long long>(x.size(0) - split));
    standard::save_digits_classifier(c, argv[2]);
    std::printf("wrote %s\n", argv[2]);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  }
  return 0;
}
