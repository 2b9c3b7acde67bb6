// .npy arrays: flowkit::io::parse_npy (read_npy's body; flowkit-policy reads users' observations with it).
#include "flowkit/io.h"
#include "fuzz_util.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  flowkit::fuzz::refuses_only_with_flowkit_errors([&] {
    std::vector<int64_t> shape;
    std::vector<float> values = flowkit::io::parse_npy(flowkit::fuzz::text(data, size), "fuzz.npy", &shape);
    int64_t count = 1;
    for (int64_t d : shape) count *= d;
    if (static_cast<size_t>(count) != values.size()) __builtin_trap();
  });
  return 0;
}
