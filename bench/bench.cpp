// flowkit-bench: train steps/s and samples/s of a pipeline (default: the quickstart),
// for each thread count, median of several repeats measured side by side in one process.
#include <CLI/CLI.hpp>
#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <filesystem>
#include <random>

#include "flowkit/core/pipeline.h"
#include "flowkit/core/session.h"

namespace fs = std::filesystem;
using namespace flowkit::core;

static double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  size_t n = v.size();
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

int main(int argc, char** argv) {
  CLI::App app{"flowkit-bench: training and sampling throughput of a pipeline"};
  std::string file = FLOWKIT_SOURCE_DIR "/plugins/standard/examples/quickstart.json";
  int64_t steps = 300, samples = 1000;
  int repeats = 3;
  std::vector<int> threads = {1, 2};
  app.add_option("pipeline", file, "pipeline JSON")->capture_default_str();
  app.add_option("--steps", steps, "training steps per measurement")->capture_default_str();
  app.add_option("--samples", samples, "samples per sampling measurement")->capture_default_str();
  app.add_option("--repeats", repeats, "repeats per setting (median reported)")->capture_default_str();
  app.add_option("--threads", threads, "thread counts to compare")->delimiter(',');
  bool json = false;
  app.add_flag("--json", json, "print one JSON line per thread count instead of the table");
  CLI11_PARSE(app, argc, argv);
  spdlog::set_level(spdlog::level::warn);

  PluginHost host;
  auto v = validate_pipeline_file(file, host);
  if (!v.ok()) {
    fmt::print(stderr, "{}", v.report());
    return 2;
  }
  fs::path root = fs::temp_directory_path() / fmt::format("flowkit_bench_{}", std::random_device{}());
  if (!json) fmt::print("pipeline {}: {} train steps, {} samples, {} repeats (interleaved)\n", v.pipeline.name, steps, samples, repeats);
  std::map<int, std::vector<double>> train_rate, sample_rate;
  int run = 0;
  for (int r = 0; r < repeats; ++r)
    for (int t : threads) {
      Pipeline p = v.pipeline;
      p.resolved["train"]["steps"] = steps;
      p.resolved["train"]["threads"] = t;
      p.resolved["train"]["checkpoint_every"] = 0;
      p.resolved["train"]["log_every"] = steps;
      RunOptions o;
      o.runs_root = root.string();
      o.run_name = fmt::format("r{}", run++);
      Session s(p, host, o);
      train_rate[t].push_back(s.train().steps_per_second);
      sample_rate[t].push_back(s.sampling_rate(samples));
    }
  if (json) {
    for (int t : threads)
      fmt::print("{{\"threads\": {}, \"steps_per_sec\": {:.4f}, \"samples_per_sec\": {:.4f}}}\n", t, median(train_rate[t]),
                 median(sample_rate[t]));
  } else {
    fmt::print("{:>8} {:>16} {:>16}\n", "threads", "train steps/s", "samples/s");
    for (int t : threads) fmt::print("{:>8} {:>16.1f} {:>16.1f}\n", t, median(train_rate[t]), median(sample_rate[t]));
  }
  fs::remove_all(root);
  return 0;
}
