// flowkit/core/session.h — one run of a validated pipeline: builds the components once,
// then trains, samples and evaluates, writing everything under runs/<name>/.
// This header does not include LibTorch, so the CLI compiles quickly.
#pragma once
#include <nlohmann/json.hpp>

#include <memory>
#include <string>
#include <vector>

#include "flowkit/core/pipeline.h"
#include "flowkit/core/plugin_host.h"

namespace flowkit::core {

struct RunOptions {
  std::string runs_root = "runs";  // run directory = runs_root/run_name
  std::string run_name;            // default: the pipeline's name
  bool resume = false;             // continue from checkpoints/last.pt
  std::string checkpoint;          // sample/eval: checkpoint to load (default checkpoints/last.pt)
  bool progress_bar = false;       // redraw one line on a terminal; plain lines otherwise
  int64_t stop_at_step = -1;       // stop (with a checkpoint) at this step, as if interrupted
  std::string eval_label;          // eval: store the metrics as evals/<label>.json, not eval.json
  // Join the distributed run that RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT describe (torchrun,
  // mpirun/srun wrappers; docs/distributed.md), if WORLD_SIZE > 1. Rank 0 alone writes the run
  // directory; the others train and stop.
  bool distributed = false;
};

// What `train` did.
struct TrainSummary {
  int64_t start_step = 0, end_step = 0;
  double final_loss = 0;
  double steps_per_second = 0;
  std::string checkpoint;
};

// Thrown by Session::train when SIGINT or SIGTERM arrived: the step in progress was finished
// and a checkpoint written, so `--resume` continues bit-exactly.
struct TrainingInterrupted : Error {
  TrainingInterrupted(int signal_number, int64_t step, const std::string& checkpoint);
  int signal_number;
  int64_t step;
  std::string checkpoint;
};

struct SessionState;

class Session {
 public:
  // Builds every component (loading plugins on first use). Throws flowkit::Error.
  Session(const Pipeline& pipeline, PluginHost& host, RunOptions options);
  ~Session();

  const std::string& run_dir() const;
  // False on the ranks other than 0 of a distributed run (they neither sample nor evaluate).
  bool primary() const;
  // Trains to train.steps (or RunOptions::stop_at_step). One training process per run
  // directory (a lock); SIGINT/SIGTERM end it after the current step with a checkpoint
  // (TrainingInterrupted). A corrupt last.pt on resume falls back to the newest valid
  // step checkpoint, with a warning naming what was skipped.
  TrainSummary train();
  // Generates train/sample "count" samples and writes them; returns the files written.
  std::vector<std::string> sample();
  // Generates samples in memory and computes the eval metrics against held-out data (and,
  // for an invertible model, the exact NLL of the reference in bits per dimension);
  // appends them to metrics.jsonl and writes eval.json (evals/<label>.json with eval_label).
  nlohmann::json evaluate();
  // Loads a checkpoint (default: the latest in the run directory) into model and EMA.
  void load_checkpoint(const std::string& path = "");
  // Generation speed: samples per second over `count` samples (for bench/).
  double sampling_rate(int64_t count);

 private:
  friend struct SessionAccess;  // flowkit/core/embed.h
  std::unique_ptr<SessionState> impl_;
};

}  // namespace flowkit::core
