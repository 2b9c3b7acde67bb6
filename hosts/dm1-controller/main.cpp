// dm1-controller — a robot-controller-style host for a trained DM1 run.
//
//   dm1-controller RUN_DIR [--steps K] [--calls N] [--episodes E] [--batch B] [--plugin-path DIR]
//
// Opens the run with flowkit::core::open_run (its resolved pipeline, plugins and last
// checkpoint, EMA weights), wraps it with make_policy, and runs BiReach2D episodes one at a
// time, calling act(observation) every `execute` steps exactly as a controller would. Prints
// JSON: latency per policy call at batch 1 on 1 thread (p50/p90/p99/mean, ms), the closed-loop
// success of those batch-1 episodes, and the throughput of batch-B calls (B observations per
// call). --steps overrides the run's sample.steps.
#include <torch/torch.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <nlohmann/json.hpp>

#include "dm1/dm1.h"
#include "flowkit/core/embed.h"

namespace fs = std::filesystem;

int main(int argc, char** argv) {
  if (argc < 2) {
    std::cerr << "usage: dm1-controller RUN_DIR [--steps K] [--calls N] [--episodes E] [--batch B] [--plugin-path DIR]\n";
    return 2;
  }
  std::string run_dir = argv[1];
  int64_t steps = 0, calls = 300, episodes = 20, batch = 200;
  flowkit::core::SearchOptions search;
  for (int i = 2; i + 1 < argc; i += 2) {
    std::string k = argv[i], v = argv[i + 1];
    if (k == "--steps") steps = std::stoll(v);
    else if (k == "--calls") calls = std::stoll(v);
    else if (k == "--episodes") episodes = std::stoll(v);
    else if (k == "--batch") batch = std::stoll(v);
    else if (k == "--plugin-path") search.plugin_paths.push_back(v);
    else {
      std::cerr << "unknown option " << k << "\n";
      return 2;
    }
  }
  torch::set_num_threads(1);
  try {
    nlohmann::json resolved;
    {
      std::ifstream f(fs::path(run_dir) / "pipeline.resolved.json");
      if (!f) throw std::runtime_error("no pipeline.resolved.json in " + run_dir);
      f >> resolved;
    }
    flowkit::core::PluginHost host(search);
    auto session = flowkit::core::open_run(run_dir, host);
    flowkit::Policy act = flowkit::core::make_policy(*session, steps);

    // The environment, configured like the run's domain.
    const nlohmann::json& d = resolved.at("domain");
    dm1::EnvOptions eo;
    eo.horizon = d.value("horizon", 80);
    eo.goals = d.value("goals", 8);
    eo.image_size = d.value("image_size", 16);
    const std::string variant = d.value("observation", std::string("state"));
    const int64_t execute = d.value("execute", 4);
    dm1::BiReachEnv env(eo);
    auto gen = at::detail::createCPUGenerator(1234);

    std::vector<double> ms;
    int64_t done = 0, succ = 0;
    while (static_cast<int64_t>(ms.size()) < calls || done < episodes) {
      env.reset(1, gen);
      while (!env.all_done()) {
        flowkit::Conditioning obs = dm1::observe(env, variant);
        auto t0 = std::chrono::steady_clock::now();
        torch::Tensor chunk = act(obs, gen);
        ms.push_back(1000.0 * std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
        auto a = chunk.to(torch::kDouble).reshape({-1, 2}).contiguous();
        for (int64_t k = 0; k < execute && k < a.size(0) && !env.all_done(); ++k)
          env.step({{a[k][0].item<double>(), a[k][1].item<double>()}});
      }
      ++done;
      succ += env.status()[0] == dm1::Status::success;
    }
    std::vector<double> sorted = ms;
    std::sort(sorted.begin(), sorted.end());
    auto q = [&](double p) { return sorted[std::min<size_t>(sorted.size() - 1, static_cast<size_t>(p * sorted.size()))]; };
    double mean = 0;
    for (double v : ms) mean += v / static_cast<double>(ms.size());

    // Batch throughput: B observations per call.
    env.reset(batch, gen);
    flowkit::Conditioning obs = dm1::observe(env, variant);
    (void)act(obs, gen);
    const int reps = 10;
    auto t0 = std::chrono::steady_clock::now();
    for (int i = 0; i < reps; ++i) (void)act(obs, gen);
    double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();

    nlohmann::json out = {{"run", run_dir},
                          {"steps", steps > 0 ? steps : resolved["sample"].value("steps", 0)},
                          {"calls", ms.size()},
                          {"latency_ms_p50", q(0.5)}, {"latency_ms_p90", q(0.9)}, {"latency_ms_p99", q(0.99)},
                          {"latency_ms_mean", mean},
                          {"episodes_batch1", done}, {"success_batch1", static_cast<double>(succ) / done},
                          {"batch", batch}, {"batch_call_ms", 1000.0 * secs / reps},
                          {"batch_chunks_per_s", static_cast<double>(batch * reps) / secs}};
    std::cout << out.dump() << std::endl;
    act = nullptr;  // the policy holds the session's EMA swap: release it first
    session.reset();
    return 0;
  } catch (const std::exception& e) {
    std::cerr << "error: " << e.what() << "\n";
    return 1;
  }
}
