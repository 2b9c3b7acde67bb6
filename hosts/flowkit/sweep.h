// `flowkit sweep sweep.json`: a base pipeline, a grid or list of overrides and a list of seeds;
// every point is an ordinary run in its own process and run directory, up to `jobs` at a time;
// finished points are skipped on a re-run; eval-only points re-evaluate a trained point with
// other sampler settings. Everything lands in <runs_dir>/<sweep name>/results.jsonl.
// The sweep file's keys are documented in docs/experiments.md.
#pragma once
#include <string>
#include <vector>

#include "flowkit/core/plugin_catalog.h"

namespace flowkit::host {

struct SweepOptions {
  std::string file;                       // the sweep JSON
  int jobs = 0;                           // 0: the file's "jobs" (default 1)
  std::string runs_dir;                   // "": the file's "runs_dir" (default "runs")
  std::vector<std::string> plugin_paths;  // passed on to every run
  bool dry_run = false;                   // print the points and their commands, run nothing
};

// Runs (or continues) the sweep; returns an exit code: kOk, kRuntime when a point failed,
// kUsage (nothing run) when a point's pipeline does not validate or a point's folder was run
// with other settings, 130 when interrupted by SIGINT/SIGTERM. Throws ConfigError (file and
// JSON pointer) for a malformed sweep file.
int run_sweep(const SweepOptions& options, const core::PluginCatalog& catalog);

}  // namespace flowkit::host
