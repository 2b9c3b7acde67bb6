// A user's CSV tables: standard::read_tensor_csv (standard.tensor); the first byte picks whether
// a label column "y" and a condition column "c" are asked for.
#include "fuzz_util.h"
#include "standard/tensor_domain.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  const std::string path = flowkit::fuzz::scratch_file("table.csv", flowkit::fuzz::text(data + 1, size - 1));
  flowkit::fuzz::refuses_only_with_flowkit_errors([&] {
    const std::string label = data[0] & 1 ? "y" : "";
    const std::vector<std::string> conditions = data[0] & 2 ? std::vector<std::string>{"c"} : std::vector<std::string>{};
    standard::TensorData d = standard::read_tensor_csv(path, label, conditions);
    if (d.x.dim() != 2 || d.x.size(0) == 0 || (d.labels.defined() && d.labels.size(0) != d.x.size(0))) __builtin_trap();
  });
  return 0;
}
