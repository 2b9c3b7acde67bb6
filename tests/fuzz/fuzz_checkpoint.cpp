// Training checkpoints (`--resume`, `sample --checkpoint`): Session::load_checkpoint of a
// small model (checkpoint_pipeline.json) on the bytes as a checkpoint file. A refusal must be
// flowkit::Error naming the file; an accepted file must leave finite weights of the model's shapes.
#include "flowkit/core/session.h"
#include "fuzz_util.h"

namespace {
flowkit::core::Session& session() {
  static flowkit::core::PluginHost host{flowkit::core::SearchOptions{}};
  static flowkit::core::Pipeline pipeline = [] {
    auto v = flowkit::core::validate_pipeline_file(FLOWKIT_SOURCE_DIR "/tests/fuzz/checkpoint_pipeline.json", host);
    if (!v.ok()) throw flowkit::Error(v.report());
    return v.pipeline;
  }();
  static flowkit::core::Session s(pipeline, host, [] {
    flowkit::core::RunOptions o;
    o.runs_root = flowkit::fuzz::scratch_file("runs", "") + "_dir";
    o.run_name = "checkpoint";
    return o;
  }());
  return s;
}
}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  flowkit::core::Session& s = session();
  const std::string file = flowkit::fuzz::scratch_file("checkpoint.pt", flowkit::fuzz::text(data, size));
  try {
    s.load_checkpoint(file);
  } catch (const flowkit::Error& e) {
    if (std::string(e.what()).find(file) == std::string::npos) __builtin_trap();  // the refusal names the file
  }
  return 0;
}
