// libflowkit_cli_runtime.so — the half of the `flowkit` command that needs LibTorch: train,
// sample, eval, run and conformance. The torch-free `flowkit` binary loads it only for those
// commands, so `plugins`, `describe` and `validate` never map LibTorch.
#include <c10/util/Exception.h>
#include <fmt/format.h>
#include <spdlog/spdlog.h>
#include <unistd.h>

#include "flowkit/core/conformance.h"
#include "flowkit/core/pipeline.h"
#include "flowkit/core/plugin_host.h"
#include "flowkit/core/progress_display.h"
#include "flowkit/core/run_directory.h"
#include "flowkit/core/session.h"
#include "runtime_request.h"
#include "terminal.h"

using namespace flowkit;
using namespace flowkit::host;

namespace {

int run_job(const RuntimeRequest& r, core::PluginHost& host) {
  auto v = core::validate_pipeline_file(r.pipeline, host, r.overrides);
  if (!v.ok()) {
    print_error(fmt::format("{} problem(s) in {}:\n{}", v.problems.size(), r.pipeline, v.report()));
    return kUsage;
  }
  const core::Pipeline& pipeline = v.pipeline;
  const bool trains = r.command == "train" || r.command == "run";
  std::string run_name = r.run_name;
  // A fresh `train`/`run` without --name never touches an earlier run: it takes <name>-2, -3, ...
  if (run_name.empty() && !r.resume && trains) {
    run_name = pipeline.name;
    for (int i = 2; core::RunDirectory(r.runs_dir, run_name).has_checkpoint(); ++i) run_name = pipeline.name + "-" + std::to_string(i);
    if (run_name != pipeline.name) spdlog::info("runs/{} already exists; this run is {}", pipeline.name, run_name);
  }
  core::RunOptions options;
  options.runs_root = r.runs_dir;
  options.run_name = run_name;
  options.resume = r.resume;
  options.stop_at_step = r.stop_at;
  options.checkpoint = r.checkpoint;
  options.eval_label = r.eval_label;
  options.progress_bar = isatty(STDERR_FILENO) && !r.quiet;
  options.distributed = trains;  // under torchrun (RANK, WORLD_SIZE, ...): data-parallel training
  if (!r.quiet) core::show_progress_on_stderr(options.progress_bar);
  core::Session session(pipeline, host, options);
  if (trains) {
    auto s = session.train();
    spdlog::info("trained steps {}..{} at {:.1f} steps/s; checkpoint {}", s.start_step, s.end_step, s.steps_per_second, s.checkpoint);
    if (!session.primary()) return kOk;  // rank 0 samples, evaluates and reports
  } else {
    session.load_checkpoint(r.checkpoint);
  }
  if (r.command == "sample" || r.command == "run")
    for (const auto& f : session.sample()) fmt::print("sample file: {}\n", f);
  if (r.command == "eval" || r.command == "run") fmt::print("metrics: {}\n", session.evaluate().dump());
  fmt::print("run directory: {}\n", session.run_dir());
  return kOk;
}

int run_conformance(const RuntimeRequest& r, core::PluginHost& host) {
  auto report = core::run_conformance(host, r.plugins);
  fmt::print("{}", report.text());
  fmt::print("{} passed, {} failed\n", report.checks.size() - report.failures(), report.failures());
  return report.failures() == 0 ? kOk : kRuntime;
}

}  // namespace

extern "C" __attribute__((visibility("default"))) int flowkit_cli_runtime_v1(const char* request_json) noexcept {
  try {
    const RuntimeRequest r = runtime_request_from_json(nlohmann::json::parse(request_json));
    spdlog::set_level(r.verbose ? spdlog::level::debug : r.quiet ? spdlog::level::warn : spdlog::level::info);
    spdlog::set_pattern("[%H:%M:%S] %^%l%$ %v");
    core::SearchOptions search;
    search.plugin_paths = r.plugin_paths;
    core::PluginHost host(search);
    if (r.command == "conformance") return run_conformance(r, host);
    return run_job(r, host);
  } catch (const ConfigError& e) {
    print_error(e.what());
    return kUsage;
  } catch (const core::TrainingInterrupted& e) {
    // 128 + the signal, as a shell reports a process it killed; the run continues with --resume.
    print_warning(std::string(e.what()) + ". Continue with the same command and --resume (and the same --name).");
    return 128 + e.signal_number;
  } catch (const c10::Error& e) {
    print_error(e.what_without_backtrace());  // LibTorch's C++ stack trace helps no user
    return kRuntime;
  } catch (const std::exception& e) {
    print_error(e.what());
    return kRuntime;
  } catch (...) {
    print_error("unknown exception");
    return kRuntime;
  }
}
