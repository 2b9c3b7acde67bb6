// The state of one run, shared by the parts of the session (internal to libflowkit_core).
// Each part has one job: session.cpp sets up the run and builds the components, ema.cpp
// averages, checkpoints.cpp stores, training.cpp trains, generation.cpp samples,
// evaluation.cpp evaluates, run_log.cpp logs.
#pragma once
#include <spdlog/spdlog.h>
#include <torch/torch.h>

#include <memory>
#include <vector>

#include "flowkit/core/run_directory.h"
#include "flowkit/core/session.h"
#include "flowkit/flowkit.h"
#include "flowkit/io.h"
#include "flowkit/parameter_swap.h"
#include "session/distributed.h"
#include "session/flat_adamw.h"

namespace flowkit::core {

// The pipeline's components, built once in flowkit::kinds() order.
struct Components {
  std::vector<std::unique_ptr<Component>> owned;
  std::vector<std::string> owned_kinds;  // the section of each owned component ("domain", ...)
  Domain* domain = nullptr;
  Path* path = nullptr;
  Model* model = nullptr;
  Loss* loss = nullptr;
  Solver* solver = nullptr;
  Guidance* guidance = nullptr;  // sampling only: the solver is given a GuidedModel
};
Components build_components(const Pipeline& pipeline, PluginHost& host, const torch::Device& device);

// Exponential moving average of the model's parameters (with warm-up).
class Ema {
 public:
  // `flat`: the optimizer's one buffer of all parameters (FlatAdamW::all_parameters), if any;
  // the average is then one buffer too and an update is one operation.
  Ema(Model& model, double decay, const torch::Tensor& flat = {});
  bool enabled() const { return decay_ > 0; }
  void update(int64_t step);
  std::vector<torch::Tensor>& weights() { return weights_; }
  // The EMA weights in the model for the guard's lifetime when `use` and enabled.
  std::unique_ptr<ScopedParameterSwap> swap_in(bool use);

 private:
  Model& model_;
  double decay_;
  std::vector<torch::Tensor> params_;   // the model's parameters, listed once
  std::vector<torch::Tensor> weights_;  // views of flat_weights_ when there is a flat buffer
  torch::Tensor flat_params_, flat_weights_;
};

torch::Generator make_generator(const torch::Device& device, uint64_t seed);

struct SessionState {
  Pipeline pipeline;
  PluginHost& host;
  RunOptions options;
  RunDirectory dir;
  std::string dir_string;
  torch::Device device = torch::kCPU;
  Components parts;
  std::unique_ptr<Ema> ema;
  std::unique_ptr<FlatAdamW> optimizer;
  int64_t step = 0;
  torch::Generator gen;
  Config train_cfg, sample_cfg, eval_cfg;
  int64_t last_nfe = 0;                           // of the last policy call
  int64_t last_network_evaluations = 0;           // per item, of the last policy call (guidance counts its extra passes)
  std::shared_ptr<spdlog::sinks::sink> log_file;  // the run's log.txt (rank 0 only)

  // Distributed runs (docs/distributed.md). `gen` is then the data stream, the same on every
  // rank; `rank_gen` this rank's stream for the loss's noise.
  WorldInfo world;
  std::unique_ptr<ProcessGroup> group;      // set when world.distributed()
  torch::Generator rank_gen;
  std::vector<torch::Tensor> rank_streams;  // every rank's rank_gen state: gathered for a checkpoint, or loaded from one
  bool per_rank_data = false;               // the domain's batches are not split by rows: each rank draws its own
  bool primary() const { return world.rank == 0; }

  SessionState(const Pipeline& p, PluginHost& h, RunOptions o);
};

// checkpoints.cpp
// A checkpoint file that cannot be read (truncated, corrupt, not a checkpoint), as opposed to
// one that is intact but belongs to another model.
struct UnreadableCheckpoint : Error {
  using Error::Error;
};
void save_checkpoint(SessionState& s);
void load_checkpoint(SessionState& s, const std::filesystem::path& file);
// Resume: last.pt, or when it is unreadable the newest readable step_*.pt (warning about each
// file skipped). Throws when none can be read.
void load_latest_checkpoint(SessionState& s);
void export_weights(SessionState& s);
// training.cpp
TrainSummary train_loop(SessionState& s);
// data_parallel.cpp: the training loop's side of a distributed run; every function is a
// collective (all ranks call it at the same step).
void dp_start(SessionState& s);  // checks train.batch_size, gives every rank rank 0's state
Batch dp_batch(SessionState& s, int64_t global_batch);  // this rank's share of the step's batch
struct DpStatus {
  double loss = 0;  // mean over ranks
  bool non_finite = false, stop = false;
  std::map<std::string, double> logs;  // means over ranks
};
DpStatus dp_status(SessionState& s, double loss, bool stop_requested, const std::map<std::string, double>& logs);
void dp_average_gradients(SessionState& s);
void dp_gather_rank_streams(SessionState& s);  // into s.rank_streams, before a checkpoint
nlohmann::json dp_check_replicas(SessionState& s);  // at the end: the parameters are the same on every rank
// generation.cpp
// The solver's ODE integrator and the path's prior density, which likelihoods need, or a
// ConfigError at `json_path` (e.g. "/eval/likelihood") saying which is missing.
std::pair<const OdeIntegrator&, const PriorDensity&> likelihood_parts(SessionState& s, const std::string& json_path);

// *nfe: the solver's evaluations of the velocity per sample; *network_evaluations (if given):
// the network's, which guidance may multiply (classifier-free: the conditional and null passes).
Batch generate(SessionState& s, int64_t count, int64_t steps, bool use_ema, torch::Generator& g, int64_t* nfe,
               int64_t* network_evaluations = nullptr);
Policy policy_of(SessionState& s, int64_t steps_override);  // puts the model in eval mode
// evaluation.cpp
nlohmann::json evaluate_run(SessionState& s);
// run_log.cpp
std::shared_ptr<spdlog::sinks::sink> open_run_log(const RunDirectory& dir);
void append_json_line(const std::filesystem::path& file, const nlohmann::json& j);
std::string format_eta(double seconds);

}  // namespace flowkit::core
