// Name→tensor pickles (torch.save format): flowkit::io::parse_tensor_dict, which reads the
// digits classifier and any weights file a plugin loads.
#include "flowkit/tensor_file.h"
#include "fuzz_util.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  flowkit::fuzz::refuses_only_with_flowkit_errors(
      [&] { (void)flowkit::io::parse_tensor_dict(flowkit::fuzz::text(data, size), "fuzz.pt"); });
  return 0;
}
