// flowkit-policy — a trained run used as a policy, the way a robot controller or a service
// embeds it (flowkit/core/embed.h: open_run + make_policy). Knows no plugin.
//
//   flowkit-policy RUN_DIR [--steps K] [--calls N] [--batch B] [--episodes E] [--warmup W]
//                  [--obs NAME=FILE.npy ...] [--synthetic zeros|normal] [--domain-set KEY=VALUE ...]
//                  [--seed S] [--threads T] [--blas-threads B] [--checkpoint FILE] [--plugin-path DIR ...]
//
// Times N policy calls of one observation row each and prints one JSON line: per-call latency
// (p50/p90/p99/mean, ms) and the time of one call with B rows (throughput). Observation rows:
//   * --obs: float32 .npy files [R, ...], one per conditioning field; call i reads row i mod R;
//   * --synthetic: zeros or standard-normal rows of the domain's condition_shapes();
//   * otherwise the domain's own sample_conditions() (e.g. start states of fresh episodes).
// With --episodes E and a domain that has an environment (flowkit::Environment), the calls are
// made closed-loop instead: the host rolls the policy out (at least E rollouts, and until N
// calls are timed) and adds the mean of each numeric rollout metric. The host builds its own
// copy of the run's domain for this; --domain-set overrides that copy's parameters (e.g. a
// batch-1 rollout size), never the run's components.
#include <ATen/CPUGeneratorImpl.h>
#include <ATen/Parallel.h>
#include <CLI/CLI.hpp>
#include <torch/types.h>

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <iostream>
#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "flowkit/capability.h"
#include "flowkit/core/embed.h"
#include "flowkit/core/pipeline.h"
#include "flowkit/core/run_directory.h"
#include "flowkit/domain.h"
#include "flowkit/io.h"
#include "flowkit/kinds.h"

namespace fs = std::filesystem;
using flowkit::Conditioning;

namespace {

struct Options {
  std::string run_dir, checkpoint, synthetic;
  int64_t steps = 0, calls = 300, batch = 200, episodes = 0, warmup = 0, threads = 1, blas_threads = 0;
  uint64_t seed = 1234;
  std::vector<std::string> obs_files, domain_set, plugin_paths;
};

std::pair<std::string, std::string> split_assignment(const std::string& s, const char* what) {
  auto eq = s.find('=');
  if (eq == std::string::npos || eq == 0) throw flowkit::Error(std::string(what) + " expects NAME=VALUE, got '" + s + "'");
  return {s.substr(0, eq), s.substr(eq + 1)};
}

std::string shape_str(const std::vector<int64_t>& shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + "]";
}

// The run's pipeline with --domain-set KEY=VALUE applied to its domain, validated like any
// command-line override (core/pipeline.h).
flowkit::core::Pipeline run_pipeline(const Options& o, flowkit::core::PluginHost& host) {
  const fs::path file = flowkit::core::RunDirectory(fs::path(o.run_dir)).resolved_pipeline();
  std::vector<std::string> overrides;
  for (const auto& d : o.domain_set) overrides.push_back("domain." + d);
  auto v = flowkit::core::validate_pipeline_file(file.string(), host, overrides);
  if (!v.ok()) throw flowkit::Error("cannot use run '" + o.run_dir + "':\n" + v.report());
  return v.pipeline;
}

// The host's own copy of the run's domain (with --domain-set), never the run's components.
std::unique_ptr<flowkit::Component> build_domain(const flowkit::core::Pipeline& pipeline, flowkit::core::PluginHost& host) {
  flowkit::BuildContext ctx;
  ctx.device = "cpu";
  ctx.build = [&host, &ctx](flowkit::Kind kind, const flowkit::Config& cfg) { return host.create(kind, cfg, ctx); };
  return host.create(flowkit::Kind::domain, pipeline.section("domain"), ctx);
}

// Observation rows for the open-loop calls and the batch call; `source` says where from.
Conditioning observation_rows(const Options& o, const flowkit::Domain& domain, int64_t rows, torch::Generator& gen,
                              std::string* source) {
  const auto shapes = domain.condition_shapes();
  auto synthesise = [&](const std::string& kind) {
    Conditioning c;
    for (const auto& [name, shape] : shapes) {
      std::vector<int64_t> full{rows};
      full.insert(full.end(), shape.begin(), shape.end());
      c.set(name, kind == "normal" ? torch::randn(full, gen) : torch::zeros(full));
    }
    *source = kind;
    return c;
  };
  if (!o.obs_files.empty()) {
    Conditioning c;
    int64_t n = -1;
    for (const auto& spec : o.obs_files) {
      auto [name, file] = split_assignment(spec, "--obs");
      std::vector<int64_t> shape;
      std::vector<float> data = flowkit::io::read_npy(file, &shape);
      if (shape.empty() || shape[0] < 1) throw flowkit::Error(file + ": expected rows [R, ...] with R >= 1");
      if (n >= 0 && shape[0] != n) throw flowkit::Error(file + ": " + std::to_string(shape[0]) + " rows, the other --obs files have " + std::to_string(n));
      n = shape[0];
      std::vector<int64_t> row(shape.begin() + 1, shape.end());
      auto it = shapes.find(name);
      if (it != shapes.end() && it->second != row)
        throw flowkit::Error(file + ": rows of shape " + shape_str(row) + ", but the domain's '" + name + "' is " + shape_str(it->second));
      c.set(name, torch::from_blob(data.data(), shape, torch::kFloat).clone());
    }
    for (const auto& [name, shape] : shapes)
      if (!c.has(name)) {
        std::cerr << "note: no --obs for '" << name << "', using zeros " << shape_str(shape) << "\n";
        std::vector<int64_t> full{n};
        full.insert(full.end(), shape.begin(), shape.end());
        c.set(name, torch::zeros(full));
      }
    *source = "npy";
    return c;
  }
  if (!o.synthetic.empty()) return synthesise(o.synthetic);
  Conditioning c = domain.sample_conditions(0, rows, gen);
  if (c.empty() && !shapes.empty()) return synthesise("zeros");
  *source = "domain";
  return c;
}

int64_t rows_of(const Conditioning& c) { return c.empty() ? 1 : c.begin()->second.size(0); }

// Rows `index` (wrapping around) of every field.
Conditioning take_rows(const Conditioning& c, int64_t first, int64_t n) {
  if (c.empty()) return c;
  const int64_t R = rows_of(c);
  return c.index_rows(torch::arange(first, first + n, torch::kLong).remainder(R), R);
}

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

int run(const Options& o) {
  at::set_num_threads(static_cast<int>(o.threads));
  flowkit::core::SearchOptions search;
  search.plugin_paths = o.plugin_paths;
  flowkit::core::PluginHost host(search);
  auto session = flowkit::core::open_run(o.run_dir, host, o.checkpoint);
  if (o.blas_threads > 0) flowkit::core::set_blas_threads(static_cast<int>(o.blas_threads));  // after open_run, which applies the run's own
  flowkit::Policy act = flowkit::core::make_policy(*session, o.steps);

  const flowkit::core::Pipeline pipeline = run_pipeline(o, host);
  std::unique_ptr<flowkit::Component> domain_component = build_domain(pipeline, host);
  if (!flowkit::implements_interface(flowkit::Kind::domain, *domain_component))
    throw flowkit::Error("the run's domain does not implement flowkit::Domain");
  auto* domain = static_cast<flowkit::Domain*>(domain_component.get());
  auto gen = at::detail::createCPUGenerator(o.seed);

  std::string source;
  const Conditioning rows = observation_rows(o, *domain, std::max<int64_t>({o.calls, o.batch, 1}), gen, &source);
  for (int64_t i = 0; i < o.warmup; ++i) (void)act(take_rows(rows, i, 1), gen);

  std::vector<double> ms;
  int64_t max_rows = 0;
  nlohmann::json out = {{"run", o.run_dir},
                        {"steps", o.steps > 0 ? o.steps : pipeline.resolved.at("sample").at("steps").get<int64_t>()}};
  if (o.episodes > 0) {
    const auto* env = flowkit::capability<flowkit::Environment>(*domain);
    if (!env) throw flowkit::Error("--episodes needs a domain with an environment; this run's domain has none");
    flowkit::Policy timed = [&](const Conditioning& obs, torch::Generator& g) {
      max_rows = std::max(max_rows, rows_of(obs));
      auto t0 = std::chrono::steady_clock::now();
      torch::Tensor x = act(obs, g);
      ms.push_back(1000.0 * seconds_since(t0));
      return x;
    };
    std::map<std::string, double> sums;
    int64_t done = 0;
    while (done < o.episodes || static_cast<int64_t>(ms.size()) < o.calls) {
      nlohmann::json r = env->rollout(timed, {}, gen);
      ++done;
      for (const auto& [key, value] : r.items())
        if (value.is_number()) sums[key] += value.get<double>();
    }
    nlohmann::json means = nlohmann::json::object();
    for (const auto& [key, sum] : sums) means[key] = sum / static_cast<double>(done);
    out["observations"] = "environment";
    out["rollouts"] = done;
    out["rows_per_call"] = max_rows;
    out["rollout"] = means;
  } else {
    for (int64_t i = 0; i < o.calls; ++i) {
      Conditioning obs = take_rows(rows, i, 1);
      auto t0 = std::chrono::steady_clock::now();
      (void)act(obs, gen);
      ms.push_back(1000.0 * seconds_since(t0));
    }
    out["observations"] = source;
    out["rows_per_call"] = 1;
  }
  if (!ms.empty()) {
    out["nfe"] = flowkit::core::last_policy_nfe(*session);  // network evaluations per call
    std::vector<double> sorted = ms;
    std::sort(sorted.begin(), sorted.end());
    auto q = [&](double p) { return sorted[std::min(sorted.size() - 1, static_cast<size_t>(p * static_cast<double>(sorted.size())))]; };
    double mean = 0;
    for (double v : ms) mean += v / static_cast<double>(ms.size());
    out["calls"] = ms.size();
    out["latency_ms_p50"] = q(0.5);
    out["latency_ms_p90"] = q(0.9);
    out["latency_ms_p99"] = q(0.99);
    out["latency_ms_mean"] = mean;
  }
  if (o.batch > 0) {
    // Throughput: one call with B rows, after one untimed call of the same size.
    Conditioning obs = take_rows(rows, 0, o.batch);
    const int64_t n = act(obs, gen).size(0);
    const int reps = 10;
    auto t0 = std::chrono::steady_clock::now();
    for (int i = 0; i < reps; ++i) (void)act(obs, gen);
    const double secs = seconds_since(t0);
    out["batch"] = n;
    out["batch_call_ms"] = 1000.0 * secs / reps;
    out["batch_samples_per_s"] = static_cast<double>(n * reps) / secs;
  }
  std::cout << out.dump() << std::endl;
  act = nullptr;  // the policy refers to the session: release it first
  session.reset();
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  Options o;
  CLI::App app{"flowkit-policy: call a trained run as a policy and print per-call latency as JSON"};
  app.add_option("run_dir", o.run_dir, "run directory (holds pipeline.resolved.json and checkpoints/)")->required();
  app.add_option("--steps", o.steps, "sampler steps (0: the run's sample.steps)");
  app.add_option("--calls", o.calls, "timed policy calls of one observation row each (closed-loop: at least this many)");
  app.add_option("--batch", o.batch, "rows of the throughput call (0: skip)");
  app.add_option("--episodes", o.episodes, "closed-loop rollouts in the domain's environment (0: open-loop calls)");
  app.add_option("--warmup", o.warmup, "untimed calls before timing");
  app.add_option("--obs", o.obs_files, "NAME=FILE.npy: float32 observation rows [R, ...] of field NAME (repeatable)")
      ->allow_extra_args(false);
  app.add_option("--synthetic", o.synthetic, "zeros | normal: rows of the domain's condition_shapes()")
      ->check(CLI::IsMember({"zeros", "normal"}));
  app.add_option("--domain-set", o.domain_set, "KEY=VALUE (JSON or a bare string): a parameter of the host's copy of the domain (repeatable)")
      ->allow_extra_args(false);
  app.add_option("--seed", o.seed, "seed of the policy's and the observations' generator");
  app.add_option("--threads", o.threads, "torch intra-op threads")->check(CLI::PositiveNumber);
  app.add_option("--blas-threads", o.blas_threads, "OpenBLAS threads (0: the run's train.blas_threads; docs/performance.md measures 1 and 2)")
      ->check(CLI::NonNegativeNumber);
  app.add_option("--checkpoint", o.checkpoint, "checkpoint to load (default: the run's last)");
  app.add_option("--plugin-path", o.plugin_paths, "extra plugin directory (repeatable)")->allow_extra_args(false);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e) == 0 ? 0 : 2;  // --help: 0; usage errors: 2, as `flowkit`
  }
  if (!o.obs_files.empty() && !o.synthetic.empty()) {
    std::cerr << "error: --obs and --synthetic exclude each other\n";
    return 2;
  }
  if (o.calls < 0 || o.batch < 0 || o.episodes < 0 || o.warmup < 0) {
    std::cerr << "error: --calls, --batch, --episodes and --warmup must be >= 0\n";
    return 2;
  }
  try {
    return run(o);
  } catch (const std::exception& e) {
    std::cerr << "error: " << e.what() << "\n";
    return 1;
  }
}
