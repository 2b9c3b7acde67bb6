// dm1/bireach.h — BiReach2D: a bimodal 2-D reaching task (environment, scripted expert,
// observations) and the `dm1.bireach` domain with batched closed-loop rollouts.
#pragma once
#include <torch/torch.h>

#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "flowkit/capabilities/environment.h"
#include "flowkit/config.h"
#include "flowkit/domain.h"
#include "flowkit/registry.h"

namespace dm1 {

// Point mass in [-1, 1]^2, p <- clip(p + dt * clip(a, -1, 1), -1, 1); a disc obstacle at the
// origin; K goals on an arc above it; start below it. Entering the disc ends the episode as
// a collision; reaching within `success_radius` of the goal ends it as a success.
// horizon, goals and image_size are parameters of dm1.bireach (plugin.json; domain_options);
// the rest is the task's fixed geometry.
struct EnvOptions {
  double dt = 0.05;
  int64_t horizon{};               // environment steps per episode
  double obstacle_radius = 0.3;
  double success_radius = 0.06;
  int64_t goals{};                 // goals on the arc of radius goal_arc_radius, 60..120 degrees
  double goal_arc_radius = 0.75;
  double start_y = -0.8;
  double start_jitter = 0.05;      // start = (0, start_y) + U(-jitter, jitter)^2
  int64_t image_size{};            // side of the rendered observation (image variant)
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
  double noise{};                  // OU noise scale (dm1.bireach expert_noise)
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

// Observations of the current env state: "obs" [n, obs_dim] (state: p, previous action,
// goal one-hot) or "obs" [n, 1, S, S] image + "proprio" [n, 4] (p, previous action).
flowkit::Conditioning observe(const BiReachEnv& env, const std::string& variant);
// Shapes of one row of each field observe() returns.
std::map<std::string, std::vector<int64_t>> observation_shapes(const EnvOptions& env, const std::string& variant);

// Wilson score interval (95%) of k successes in n trials.
std::pair<double, double> wilson(double k, double n, double z = 1.96);

// ---- domain -------------------------------------------------------------------------------
// Every field is a parameter of dm1.bireach: build it with domain_options(config).
struct DomainOptions {
  EnvOptions env;
  ExpertOptions expert;
  std::string observation;   // state | image
  int64_t demos{};
  int64_t heldout_demos{};
  int64_t data_seed{};
  int64_t chunk{};           // predicted actions per policy call
  int64_t execute{};         // executed before re-planning (receding horizon)
  int64_t rollouts{};        // episodes per rollout evaluation (all in one batch)
};
// Reads every dm1.bireach parameter (the resolved config holds the manifest's defaults).
DomainOptions domain_options(const flowkit::Config& cfg);

class BiReachDomain : public flowkit::Domain, public flowkit::Environment {
 public:
  explicit BiReachDomain(DomainOptions o);
  std::vector<int64_t> item_shape() const override { return {o_.chunk, 2}; }
  flowkit::Batch train_batch(int64_t n, torch::Generator& gen) override;
  flowkit::Batch reference(int64_t n, torch::Generator& gen) override;
  // Start-state observations of fresh episodes.
  flowkit::Conditioning sample_conditions(int64_t first, int64_t n, torch::Generator& gen) const override;
  std::map<std::string, std::vector<int64_t>> condition_shapes() const override;
  std::vector<std::string> metric_names() const override;
  nlohmann::json evaluate(const flowkit::Batch& generated, const flowkit::Batch& reference,
                          const std::vector<std::string>& metrics, torch::Generator& gen) const override;
  std::vector<std::string> write(const flowkit::Batch& samples, const std::string& dir,
                                 const std::string& stem) const override;
  // `rollouts` episodes as one batch, re-planning every `execute` steps.
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

// `dm1.bireach`.
std::unique_ptr<flowkit::Component> make_domain(const flowkit::Config& cfg, const flowkit::BuildContext& ctx);

}  // namespace dm1
