// A sweep's points and its results.jsonl: one line per finished training point and per
// finished eval-only point, collected from the run directories (so a re-run or an
// interrupted sweep always writes the same file for the same finished runs).
#pragma once
#include <nlohmann/json.hpp>

#include <cstdint>
#include <filesystem>
#include <string>
#include <utility>
#include <vector>

namespace flowkit::host {

struct SweepEval {
  std::vector<std::pair<std::string, nlohmann::ordered_json>> settings;  // solver/sample/eval keys
  std::string label;                                                     // evals/<label>.json
  std::vector<std::string> overrides;                                    // the point's plus these
};

struct SweepPoint {
  std::string name;  // its run directory under the sweep folder
  std::vector<std::pair<std::string, nlohmann::ordered_json>> settings;
  int64_t seed = 0;
  std::vector<std::string> overrides;  // everything passed to `flowkit run`
  std::vector<SweepEval> evals;
};

// Rewrites <folder>/results.jsonl atomically; returns the number of lines.
// Line: {"sweep", "point", "run", "settings": {key: value}, "seed", "eval": null | label,
//        "eval_settings": {...}, "config": {every swept key: its value in this line's run},
//        "train_seconds", "train": {"final": {key: last logged value}, "mean": {key: mean over
//        the logged steps}}, "metrics": {...eval.json...}}
// "config" makes the file self-contained: a table can group by any swept key (e.g. the solver
// steps of the trained points beside the eval-only ones) without the run directories.
size_t write_sweep_results(const std::string& sweep, const std::filesystem::path& folder, const std::vector<SweepPoint>& points,
                           const std::vector<std::string>& swept_keys);

// The run's training lines in metrics.jsonl summarised: each numeric key's last logged value
// and its mean over the logged steps (e.g. a loss's clipped fraction).
nlohmann::ordered_json training_summary(const std::filesystem::path& run_dir);

// The value of a dotted key ("model.net.hidden") in a pipeline document; null when absent.
nlohmann::json resolved_value(const nlohmann::json& pipeline, const std::string& key);

// The lines of a results.jsonl with their line numbers (blank lines skipped). Throws
// std::runtime_error naming the file and line of anything that is not a results line.
struct ResultLine {
  nlohmann::json j;
  int number = 0;
};
std::vector<ResultLine> read_results(const std::filesystem::path& file);

// Total training wall time of a run: the sum of its metrics.jsonl "train_session" lines.
double training_seconds(const std::filesystem::path& run_dir);

}  // namespace flowkit::host
