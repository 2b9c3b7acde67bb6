// Pipeline manifests through full validation against the bundled plugins' manifests, with
// command-line overrides: the bytes after the first NUL are "key=value" lines.
#include "flowkit/core/pipeline.h"
#include "flowkit/core/plugin_catalog.h"
#include "fuzz_util.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const flowkit::core::PluginCatalog catalog{flowkit::core::SearchOptions{}};
  const std::string input = flowkit::fuzz::text(data, size);
  const size_t nul = input.find('\0');
  std::vector<std::string> overrides;
  if (nul != std::string::npos) {
    std::string line;
    for (size_t i = nul + 1; i <= input.size(); ++i)
      if (i == input.size() || input[i] == '\n') {
        if (!line.empty()) overrides.push_back(line);
        line.clear();
      } else {
        line += input[i];
      }
  }
  const std::string file = flowkit::fuzz::scratch_file("pipeline.json", input.substr(0, nul));
  flowkit::fuzz::refuses_only_with_flowkit_errors([&] {
    flowkit::core::Validation v = flowkit::core::validate_pipeline_file(file, catalog, overrides);
    for (const auto& p : v.problems)
      if (p.file.empty() || p.message.empty()) __builtin_trap();  // every problem is located
    if (v.ok()) (void)v.pipeline.resolved.dump();
  });
  return 0;
}
