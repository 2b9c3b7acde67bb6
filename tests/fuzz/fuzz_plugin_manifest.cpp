// plugin.json: flowkit::core::parse_manifest (what the catalog runs on every manifest it finds).
#include "flowkit/core/manifest.h"
#include "fuzz_util.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  auto m = flowkit::core::parse_manifest(flowkit::fuzz::text(data, size), "fuzz/plugin.json");
  if (!m && m.error().rfind("fuzz/plugin.json", 0) != 0) __builtin_trap();  // every refusal names the file
  return 0;
}
