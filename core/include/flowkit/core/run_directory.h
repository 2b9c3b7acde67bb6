// flowkit/core/run_directory.h — the layout of a run directory, defined once:
//   runs/<name>/pipeline.resolved.json  log.txt  metrics.jsonl  eval.json  evals/<label>.json  weights.pt  weights.safetensors
//               checkpoints/step_XXXXXXXX.pt  checkpoints/last.pt  <sample.output>/
#pragma once
#include <cstdint>
#include <filesystem>
#include <string>

namespace flowkit::core {

class RunDirectory {
 public:
  RunDirectory() = default;
  explicit RunDirectory(std::filesystem::path root) : root_(std::move(root)) {}
  RunDirectory(const std::string& runs_root, const std::string& name) : root_(std::filesystem::path(runs_root) / name) {}

  const std::filesystem::path& root() const { return root_; }
  std::filesystem::path resolved_pipeline() const { return root_ / "pipeline.resolved.json"; }
  std::filesystem::path log() const { return root_ / "log.txt"; }
  std::filesystem::path metrics() const { return root_ / "metrics.jsonl"; }
  std::filesystem::path eval() const { return root_ / "eval.json"; }
  // An extra evaluation of the trained model with other sampler settings (sweeps' eval points).
  std::filesystem::path labelled_eval(const std::string& label) const { return root_ / "evals" / (label + ".json"); }
  std::filesystem::path weights() const { return root_ / "weights.pt"; }
  // The same weights in the safetensors format (docs/pipeline.md#weights).
  std::filesystem::path weights_safetensors() const { return root_ / "weights.safetensors"; }
  std::filesystem::path checkpoints() const { return root_ / "checkpoints"; }
  std::filesystem::path checkpoint(int64_t step) const {  // step_00001234.pt
    std::string digits = std::to_string(step);
    if (digits.size() < 8) digits.insert(0, 8 - digits.size(), '0');
    return checkpoints() / ("step_" + digits + ".pt");
  }
  std::filesystem::path last_checkpoint() const { return checkpoints() / "last.pt"; }
  std::filesystem::path samples(const std::string& output) const { return root_ / output; }
  // A run that has trained at least once (its last checkpoint exists).
  bool has_checkpoint() const { return std::filesystem::exists(last_checkpoint()); }
  void create() const { std::filesystem::create_directories(checkpoints()); }

 private:
  std::filesystem::path root_;
};

}  // namespace flowkit::core
