// dm1/dm1.h — the DM1 policy plugin: one-step MeanFlow policies with dispersive
// regularisation (Zou et al. 2025; Geng et al. 2025; Wang & He 2025) and a bimodal 2-D
// reaching task ("BiReach2D") with batched rollouts.
//
// Time conventions. The framework's paths use t = 0 noise, t = 1 data. MeanFlow keeps the
// official convention inside its own loss and solver: z_t = (1 - t) x + t eps, t = 1 noise,
// v = eps - x, and u(z_t, r, t) is the average velocity over [r, t], so z_r = z_t - (t - r) u.
// The policy network itself is convention-free: it maps (z, t, r, observation) to a tensor
// shaped like z, and with r absent (r = t) it is an instantaneous velocity field, so the
// same network also serves the flow-matching baseline (standard.cfm + standard.euler).
#pragma once
#include <torch/torch.h>

#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "flowkit/config.h"
#include "flowkit/domain.h"
#include "flowkit/loss.h"
#include "flowkit/model.h"
#include "flowkit/registry.h"
#include "flowkit/solver.h"

namespace dm1 {

// ---- random draws on the generator's device ---------------------------------------------
torch::Tensor randn(torch::IntArrayRef size, torch::Generator& gen, const torch::TensorOptions& options);
torch::Tensor rand(torch::IntArrayRef size, torch::Generator& gen, const torch::TensorOptions& options);

// ---- BiReach2D environment ---------------------------------------------------------------
// Point mass in [-1, 1]^2, p <- clip(p + dt * clip(a, -1, 1), -1, 1); a disc obstacle at the
// origin; K goals on an arc above it; start below it. Entering the disc ends the episode as
// a collision; reaching within `success_radius` of the goal ends it as a success.
struct EnvOptions {
  double dt = 0.05;
  int64_t horizon = 80;            // environment steps per episode
  double obstacle_radius = 0.3;
  double success_radius = 0.06;
  int64_t goals = 8;               // goals on the arc of radius goal_arc_radius, 60..120 degrees
  double goal_arc_radius = 0.75;
  double start_y = -0.8;
  double start_jitter = 0.05;      // start = (0, start_y) + U(-jitter, jitter)^2
  int64_t image_size = 16;         // rendered observation (image variant)
};

struct Vec2 { double x = 0, y = 0; };

// Status of one episode.
enum class Status : int { running = 0, success = 1, collision = 2, timeout = 3 };

// A batch of independent episodes stepped together (plain C++ state, deterministic).
class BiReachEnv {
 public:
  explicit BiReachEnv(EnvOptions o) : o_(o) {}
  const EnvOptions& options() const { return o_; }
  Vec2 goal_position(int64_t k) const;
  // Resets n episodes: start jitter and goal index drawn from `gen`.
  void reset(int64_t n, torch::Generator& gen);
  // Resets with explicit states (tests).
  void reset_to(const std::vector<Vec2>& starts, const std::vector<int64_t>& goals);
  // One environment step for every running episode; actions [n, 2] (clipped to [-1, 1]).
  void step(const std::vector<Vec2>& actions);
  int64_t size() const { return static_cast<int64_t>(pos_.size()); }
  const std::vector<Vec2>& positions() const { return pos_; }
  const std::vector<Vec2>& previous_actions() const { return prev_; }
  const std::vector<int64_t>& goals() const { return goal_; }
  const std::vector<Status>& status() const { return status_; }
  // Side on which the episode passed the obstacle: -1 left, +1 right, 0 not yet (the sign of
  // x when the agent first reaches y >= 0).
  const std::vector<int>& side() const { return side_; }
  int64_t steps_taken() const { return t_; }
  bool all_done() const;

 private:
  EnvOptions o_;
  std::vector<Vec2> pos_, prev_;
  std::vector<int64_t> goal_;
  std::vector<Status> status_;
  std::vector<int> side_;
  int64_t t_ = 0;
};

// Scripted bimodal expert: per episode a side s = +-1 (p = 0.5), waypoints (0.5 s, -0.1),
// (0.45 s, 0.35), goal; a saturated proportional controller plus OU action noise.
struct ExpertOptions {
  double gain = 8.0;
  double noise = 0.05;             // OU noise scale
  double noise_theta = 0.3;        // OU mean reversion per step
  double waypoint_radius = 0.08;
};
class Expert {
 public:
  Expert(const BiReachEnv& env, ExpertOptions o) : env_(env), o_(o) {}
  void reset(int64_t n, torch::Generator& gen);            // draws sides
  void reset_sides(const std::vector<int>& sides);         // explicit sides
  std::vector<Vec2> act(torch::Generator& gen);            // one action per episode
  const std::vector<int>& sides() const { return side_; }

 private:
  const BiReachEnv& env_;
  ExpertOptions o_;
  std::vector<int> side_, stage_;
  std::vector<Vec2> ou_;
};

// Observations of the current env state: "obs" [n, obs_dim] (state: p, goal one-hot,
// previous action) or "obs" [n, 1, S, S] image + "proprio" [n, 4] (p, previous action).
flowkit::Conditioning observe(const BiReachEnv& env, const std::string& variant);

// Wilson score interval (95%) of k successes in n trials.
std::pair<double, double> wilson(double k, double n, double z = 1.96);
// Energy distance between two sets of flattened rows.
double energy_distance(const torch::Tensor& a, const torch::Tensor& b);

// ---- domain -------------------------------------------------------------------------------
struct DomainOptions {
  EnvOptions env;
  ExpertOptions expert;
  std::string observation = "state";   // state | image
  int64_t demos = 200;
  int64_t heldout_demos = 50;
  int64_t data_seed = 0;
  int64_t chunk = 8;                   // predicted actions per policy call
  int64_t execute = 4;                 // executed before re-planning (receding horizon)
  int64_t rollouts = 200;              // episodes per rollout evaluation (all in one batch)
};

class BiReachDomain : public flowkit::Domain {
 public:
  explicit BiReachDomain(DomainOptions o);
  std::vector<int64_t> item_shape() const override { return {o_.chunk, 2}; }
  flowkit::Batch train_batch(int64_t n, torch::Generator& gen) override;
  flowkit::Batch reference(int64_t n, torch::Generator& gen) override;
  flowkit::Conditioning sample_conditions(int64_t first, int64_t n, torch::Generator& gen) const override;
  std::vector<std::string> metric_names() const override;
  nlohmann::json evaluate(const flowkit::Batch& generated, const flowkit::Batch& reference,
                          const std::vector<std::string>& metrics, torch::Generator& gen) const override;
  std::vector<std::string> write(const flowkit::Batch& samples, const std::string& dir,
                                 const std::string& stem) const override;
  bool has_environment() const override { return true; }
  nlohmann::json rollout(const flowkit::Policy& policy, const std::vector<std::string>& metrics,
                         torch::Generator& gen) const override;

  const DomainOptions& options() const { return o_; }
  // Demonstration data: observations, action chunks and goal index of every demo step.
  struct Data {
    flowkit::TensorMap obs;   // "obs" (+ "proprio")
    torch::Tensor x;          // [N, chunk, 2]
    torch::Tensor goal;       // [N] int64
    torch::Tensor episode;    // [N] int64
    int64_t episodes = 0, successes = 0, left = 0;
  };
  const Data& train_data() const { return train_; }
  const Data& heldout_data() const { return heldout_; }
  // Generates `episodes` expert demonstrations with a CPU generator seeded by `seed`.
  Data generate(int64_t episodes, uint64_t seed) const;

 private:
  flowkit::Batch rows(const Data& d, const torch::Tensor& index) const;
  DomainOptions o_;
  Data train_, heldout_;
};

// ---- policy network -----------------------------------------------------------------------
struct PolicyOptions {
  int64_t action_dim = 16;       // flattened chunk
  std::vector<int64_t> obs_shape;   // [D] (state) or [C, H, W] (image)
  int64_t proprio_dim = 0;
  int64_t hidden = 256;
  int64_t layers = 3;            // residual trunk blocks
  int64_t obs_hidden = 128;
  int64_t obs_embed = 64;
  int64_t time_embed = 16;       // sinusoidal size; each time MLP maps it to 2*time_embed
  double time_scale = 1.0;       // sinusoid argument scale (official MeanFlow: t in [0, 1] unscaled)
  std::string time_inputs = "t_h";   // t_h: (t, t - r) (official) | t_r: (t, r) (DM1)
};

class PolicyNetImpl : public torch::nn::Module {
 public:
  explicit PolicyNetImpl(const PolicyOptions& o);
  // z: [B, action_dim], t, r: [B]; obs as in PolicyOptions; proprio [B, P] or undefined.
  torch::Tensor forward(const torch::Tensor& z, const torch::Tensor& t, const torch::Tensor& r,
                        const torch::Tensor& obs, const torch::Tensor& proprio);
  torch::Tensor encode(const torch::Tensor& obs, const torch::Tensor& proprio);
  const PolicyOptions& options() const { return o_; }
  // Intermediate representations of the last forward: "obs", "t", "r", "trunk0".. .
  std::map<std::string, torch::Tensor> taps;
  bool record_taps = true;

 private:
  PolicyOptions o_;
  torch::nn::Sequential state_enc_{nullptr}, conv_{nullptr};
  torch::nn::Linear img_head_{nullptr};
  torch::nn::Linear t1_{nullptr}, t2_{nullptr}, r1_{nullptr}, r2_{nullptr}, in_{nullptr}, out_{nullptr};
  torch::nn::ModuleList blocks_{nullptr};
};
TORCH_MODULE(PolicyNet);

// `dm1.policy`: reads cond "obs" (+ "proprio") and "r" (absent: r = t).
class PolicyModel : public flowkit::Model {
 public:
  PolicyModel(const PolicyOptions& o, std::vector<int64_t> item_shape, const std::string& device);
  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& t, const flowkit::Conditioning& cond) override;
  torch::nn::Module& module() override { return *net_; }
  PolicyNet& net() { return net_; }
  // Representations of the last forward pass (for the dispersive loss and diagnostics).
  const std::map<std::string, torch::Tensor>& representations() const { return net_->taps; }
  // The observation embedding alone.
  torch::Tensor embed(const flowkit::Conditioning& cond);
  // "obs" (the observation embedding), the time embeddings and the trunk activations at (x, t).
  flowkit::TensorMap representations(const torch::Tensor& x, const torch::Tensor& t, const flowkit::Conditioning& cond) override;

 private:
  PolicyNet net_;
  std::vector<int64_t> item_shape_;
};

// ---- dispersive regularisation -----------------------------------------------------------
// Wang & He InfoNCE-L2: log mean_{i,j} exp(-D_ij / tau), D_ij = |z_i - z_j|^2 (/ dim when
// normalize), diagonal included. Range [-ln B, 0]: 0 for identical rows, -ln B when all far.
torch::Tensor dispersive_wang_he(const torch::Tensor& z, double tau, bool normalize_by_dim = true);
// DM1's released form: s_ij = -|z_i - z_j|_2 / tau, s_ii = -1e9, s = clamp(s, -10, 10),
// L = -mean_i logsumexp_j(-s_ij). Range [-(10 + ln B), -log(e^10 + B - 1)].
torch::Tensor dispersive_dm1(const torch::Tensor& z, double tau);

// ---- MeanFlow -----------------------------------------------------------------------------
// u(z, r, t) and d/dt u = v . d_z u + d_t u at (z, t, r) with tangents (v, 1, 0).
struct Jvp { torch::Tensor u, dudt; };
// method: "forward_ad" (default) | "double_backward" (reference). Neither keeps a graph.
Jvp meanflow_jvp(flowkit::Model& model, const torch::Tensor& z, const torch::Tensor& t, const torch::Tensor& r,
                 const torch::Tensor& v, const flowkit::Conditioning& cond, const std::string& method);

struct MeanFlowOptions {
  double ratio_r_neq_t = 0.5;  // DM1 (flow_ratio 0.5); official MeanFlow 0.25
  double p_mean = -0.4, p_std = 1.0;
  // mse (DM1; default) | adaptive (official, p = 1: l / sg(l + c) is a bounded, mode-seeking
  // loss whose minimiser for a bimodal target is one mode, not the conditional mean).
  std::string weighting = "mse";
  double adaptive_p = 1.0, adaptive_c = 0.01;
  std::string jvp = "forward_ad";
  double dispersive_weight = 0.0;
  std::string dispersive_form = "wang_he";   // wang_he | dm1
  double dispersive_tau = 0.5;
  std::string dispersive_taps = "obs_time";  // obs | obs_time | trunk | all
  std::string dispersive_pass = "same";      // same | clean (DM1: separate pass, t, r ~ U(0,1))
  bool dispersive_normalize = true;
};

class MeanFlowLoss : public flowkit::Loss {
 public:
  explicit MeanFlowLoss(MeanFlowOptions o) : o_(std::move(o)) {}
  flowkit::LossOutput compute(flowkit::Model& model, const flowkit::Path* path, const flowkit::Batch& batch,
                              torch::Generator& gen) override;
  // (t, r) with t >= r, logit-normal, a fraction 1 - ratio of rows with r = t.
  std::pair<torch::Tensor, torch::Tensor> sample_tr(int64_t n, torch::Generator& gen, const torch::TensorOptions& opts) const;
  const MeanFlowOptions& options() const { return o_; }

 private:
  MeanFlowOptions o_;
};

// Dispersive term of one set of representations (sum over the chosen taps), times weight.
torch::Tensor dispersive_term(const std::map<std::string, torch::Tensor>& taps, const MeanFlowOptions& o);

// `dm1.regression`: behaviour cloning, MSE of model(0, t = 0, r = 0, obs) against x.
class RegressionLoss : public flowkit::Loss {
 public:
  flowkit::LossOutput compute(flowkit::Model& model, const flowkit::Path* path, const flowkit::Batch& batch,
                              torch::Generator& gen) override;
};

// ---- solvers ------------------------------------------------------------------------------

// `dm1.meanflow`: z_r = z_t - (t - r) u(z_t, r, t) over t = linspace(1, 0, k + 1).
class MeanFlowSolver : public flowkit::Solver {
 public:
  MeanFlowSolver(int64_t steps, double clip) : steps_(steps), clip_(clip) {}
  flowkit::SolveResult integrate(const flowkit::VectorField& f, const torch::Tensor& x0, const torch::Tensor& grid,
                                 torch::Generator& gen, bool keep) const override;
  flowkit::SolveResult sample(flowkit::Model& model, const flowkit::Path* path, const flowkit::SampleRequest& req,
                              torch::Generator& gen) const override;
  torch::Tensor grid(int64_t steps) const override;

 private:
  int64_t steps_;
  double clip_;
};

// `dm1.direct`: one forward pass model(0, t = 0, r = 0, obs) (the regression baseline).
class DirectSolver : public flowkit::Solver {
 public:
  DirectSolver(int64_t steps, double clip) : steps_(steps), clip_(clip) {}
  flowkit::SolveResult integrate(const flowkit::VectorField& f, const torch::Tensor& x0, const torch::Tensor& grid,
                                 torch::Generator& gen, bool keep) const override;
  flowkit::SolveResult sample(flowkit::Model& model, const flowkit::Path* path, const flowkit::SampleRequest& req,
                              torch::Generator& gen) const override;
  torch::Tensor grid(int64_t steps) const override;

 private:
  int64_t steps_;
  double clip_;
};

// ---- factories ----------------------------------------------------------------------------
std::unique_ptr<flowkit::Component> make_domain(const flowkit::Config& cfg, const flowkit::BuildContext& ctx);
std::unique_ptr<flowkit::Component> make_policy(const flowkit::Config& cfg, const flowkit::BuildContext& ctx);
std::unique_ptr<flowkit::Component> make_meanflow_loss(const flowkit::Config& cfg, const flowkit::BuildContext& ctx);
std::unique_ptr<flowkit::Component> make_regression_loss(const flowkit::Config& cfg, const flowkit::BuildContext& ctx);
std::unique_ptr<flowkit::Component> make_meanflow_solver(const flowkit::Config& cfg, const flowkit::BuildContext& ctx);
std::unique_ptr<flowkit::Component> make_direct_solver(const flowkit::Config& cfg, const flowkit::BuildContext& ctx);
void register_components(flowkit::Registry& registry);

// Parameter helpers (optional value with default; choices checked).
std::string choice(const flowkit::Config& cfg, const std::string& key, const std::string& fallback,
                   const std::vector<std::string>& choices);

}  // namespace dm1
