// BiReach2D: the environment, the scripted bimodal expert, observations and the domain.
#include "dm1/bireach.h"

#include "flowkit/progress.h"

#include <torch/torch.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <filesystem>
#include <fstream>

#include "flowkit/error.h"
#include "flowkit/random.h"
#include "flowkit/sample_metrics.h"

namespace dm1 {

namespace {
std::vector<double> uniform_draws(int64_t n, torch::Generator& gen) {
  torch::Tensor u = flowkit::random::rand({std::max<int64_t>(n, 1)}, gen, torch::kDouble).to(torch::kCPU).contiguous();
  return std::vector<double>(u.data_ptr<double>(), u.data_ptr<double>() + n);
}
std::vector<double> normal_draws(int64_t n, torch::Generator& gen) {
  torch::Tensor u = flowkit::random::randn({std::max<int64_t>(n, 1)}, gen, torch::kDouble).to(torch::kCPU).contiguous();
  return std::vector<double>(u.data_ptr<double>(), u.data_ptr<double>() + n);
}
double norm(Vec2 a) { return std::sqrt(a.x * a.x + a.y * a.y); }
}  // namespace

// ---- environment --------------------------------------------------------------------------

Vec2 BiReachEnv::goal_position(int64_t k) const {
  const double lo = M_PI / 3, hi = 2 * M_PI / 3;
  double a = o_.goals == 1 ? M_PI / 2 : hi - (hi - lo) * static_cast<double>(k) / static_cast<double>(o_.goals - 1);
  return {o_.goal_arc_radius * std::cos(a), o_.goal_arc_radius * std::sin(a)};
}

void BiReachEnv::reset(int64_t n, torch::Generator& gen) {
  std::vector<double> u = uniform_draws(3 * n, gen);
  std::vector<Vec2> starts(n);
  std::vector<int64_t> goals(n);
  for (int64_t i = 0; i < n; ++i) {
    starts[i] = {(2 * u[3 * i] - 1) * o_.start_jitter, o_.start_y + (2 * u[3 * i + 1] - 1) * o_.start_jitter};
    goals[i] = std::min<int64_t>(o_.goals - 1, static_cast<int64_t>(u[3 * i + 2] * static_cast<double>(o_.goals)));
  }
  reset_to(starts, goals);
}

void BiReachEnv::reset_to(const std::vector<Vec2>& starts, const std::vector<int64_t>& goals) {
  pos_ = starts;
  goal_ = goals;
  prev_.assign(starts.size(), Vec2{});
  status_.assign(starts.size(), Status::running);
  side_.assign(starts.size(), 0);
  t_ = 0;
}

void BiReachEnv::step(const std::vector<Vec2>& actions) {
  if (actions.size() != pos_.size()) throw flowkit::Error("BiReachEnv::step: wrong number of actions");
  for (size_t i = 0; i < pos_.size(); ++i) {
    if (status_[i] != Status::running) continue;
    Vec2 a{std::clamp(actions[i].x, -1.0, 1.0), std::clamp(actions[i].y, -1.0, 1.0)};
    if (!std::isfinite(a.x) || !std::isfinite(a.y)) a = {0, 0};
    prev_[i] = a;
    Vec2& p = pos_[i];
    p.x = std::clamp(p.x + o_.dt * a.x, -1.0, 1.0);
    p.y = std::clamp(p.y + o_.dt * a.y, -1.0, 1.0);
    if (side_[i] == 0 && p.y >= 0) side_[i] = p.x < 0 ? -1 : 1;
    Vec2 g = goal_position(goal_[i]);
    if (norm(p) < o_.obstacle_radius) status_[i] = Status::collision;
    else if (norm({p.x - g.x, p.y - g.y}) < o_.success_radius) status_[i] = Status::success;
  }
  ++t_;
  if (t_ >= o_.horizon)
    for (auto& s : status_)
      if (s == Status::running) s = Status::timeout;
}

bool BiReachEnv::all_done() const {
  return std::none_of(status_.begin(), status_.end(), [](Status s) { return s == Status::running; });
}

// ---- expert -------------------------------------------------------------------------------

void Expert::reset(int64_t n, torch::Generator& gen) {
  std::vector<double> u = uniform_draws(n, gen);
  std::vector<int> sides(n);
  for (int64_t i = 0; i < n; ++i) sides[i] = u[i] < 0.5 ? -1 : 1;
  reset_sides(sides);
}

void Expert::reset_sides(const std::vector<int>& sides) {
  side_ = sides;
  stage_.assign(sides.size(), 0);
  ou_.assign(sides.size(), Vec2{});
}

std::vector<Vec2> Expert::act(torch::Generator& gen) {
  const int64_t n = static_cast<int64_t>(side_.size());
  std::vector<double> e = normal_draws(2 * n, gen);
  std::vector<Vec2> out(n);
  for (int64_t i = 0; i < n; ++i) {
    Vec2 p = env_.positions()[i];
    const double s = side_[i];
    Vec2 w[3] = {{0.5 * s, -0.1}, {0.45 * s, 0.35}, env_.goal_position(env_.goals()[i])};
    while (stage_[i] < 2 && norm({w[stage_[i]].x - p.x, w[stage_[i]].y - p.y}) < o_.waypoint_radius) ++stage_[i];
    Vec2 target = w[stage_[i]];
    Vec2 a{o_.gain * (target.x - p.x), o_.gain * (target.y - p.y)};
    double m = norm(a);
    if (m > 1) a = {a.x / m, a.y / m};
    ou_[i].x += -o_.noise_theta * ou_[i].x + o_.noise * e[2 * i];
    ou_[i].y += -o_.noise_theta * ou_[i].y + o_.noise * e[2 * i + 1];
    out[i] = {std::clamp(a.x + ou_[i].x, -1.0, 1.0), std::clamp(a.y + ou_[i].y, -1.0, 1.0)};
  }
  return out;
}

// ---- observations -------------------------------------------------------------------------

flowkit::Conditioning observe(const BiReachEnv& env, const std::string& variant) {
  const auto& o = env.options();
  const int64_t n = env.size();
  flowkit::Conditioning c;
  if (variant == "state") {
    const int64_t d = 4 + o.goals;
    torch::Tensor obs = torch::zeros({n, d});
    float* q = obs.data_ptr<float>();
    for (int64_t i = 0; i < n; ++i) {
      float* row = q + i * d;
      row[0] = static_cast<float>(env.positions()[i].x);
      row[1] = static_cast<float>(env.positions()[i].y);
      row[2] = static_cast<float>(env.previous_actions()[i].x);
      row[3] = static_cast<float>(env.previous_actions()[i].y);
      row[4 + env.goals()[i]] = 1.0f;
    }
    c.set("obs", obs);
    return c;
  }
  // Image: soft obstacle disc (+0.5), goal blob (+1), agent blob (-1) on an S x S grid over
  // [-1, 1]^2; goals ~0.1 apart are under one pixel apart, so the blobs carry sub-pixel
  // position information.
  const int64_t S = o.image_size;
  const double px = 2.0 / static_cast<double>(S), sigma = 0.08;
  torch::Tensor img = torch::zeros({n, 1, S, S});
  torch::Tensor prop = torch::zeros({n, 4});
  float* q = img.data_ptr<float>();
  float* pp = prop.data_ptr<float>();
  for (int64_t i = 0; i < n; ++i) {
    Vec2 p = env.positions()[i], g = env.goal_position(env.goals()[i]);
    for (int64_t r = 0; r < S; ++r) {
      double cy = 1.0 - (2.0 * static_cast<double>(r) + 1.0) / static_cast<double>(S);  // row 0 at the top
      for (int64_t col = 0; col < S; ++col) {
        double cx = -1.0 + (2.0 * static_cast<double>(col) + 1.0) / static_cast<double>(S);
        double obst = std::clamp((o.obstacle_radius - std::sqrt(cx * cx + cy * cy)) / px + 0.5, 0.0, 1.0);
        double dg = (cx - g.x) * (cx - g.x) + (cy - g.y) * (cy - g.y);
        double da = (cx - p.x) * (cx - p.x) + (cy - p.y) * (cy - p.y);
        q[(i * S + r) * S + col] = static_cast<float>(0.5 * obst + std::exp(-dg / (2 * sigma * sigma)) -
                                                      std::exp(-da / (2 * sigma * sigma)));
      }
    }
    pp[4 * i] = static_cast<float>(p.x);
    pp[4 * i + 1] = static_cast<float>(p.y);
    pp[4 * i + 2] = static_cast<float>(env.previous_actions()[i].x);
    pp[4 * i + 3] = static_cast<float>(env.previous_actions()[i].y);
  }
  c.set("obs", img);
  c.set("proprio", prop);
  return c;
}

std::map<std::string, std::vector<int64_t>> observation_shapes(const EnvOptions& o, const std::string& variant) {
  if (variant == "state") return {{"obs", {4 + o.goals}}};
  return {{"obs", {1, o.image_size, o.image_size}}, {"proprio", {4}}};
}

std::pair<double, double> wilson(double k, double n, double z) {
  if (n <= 0) return {0.0, 1.0};
  double p = k / n, z2 = z * z;
  double centre = (p + z2 / (2 * n)) / (1 + z2 / n);
  double half = z * std::sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / (1 + z2 / n);
  return {std::max(0.0, centre - half), std::min(1.0, centre + half)};
}

// ---- domain -------------------------------------------------------------------------------

BiReachDomain::BiReachDomain(DomainOptions o) : o_(std::move(o)) {
  train_ = generate(o_.demos, static_cast<uint64_t>(o_.data_seed) * 2 + 1);
  heldout_ = generate(o_.heldout_demos, static_cast<uint64_t>(o_.data_seed) * 2 + 2);
}

BiReachDomain::Data BiReachDomain::generate(int64_t episodes, uint64_t seed) const {
  auto gen = at::detail::createCPUGenerator(seed);
  BiReachEnv env(o_.env);
  Expert expert(env, o_.expert);
  env.reset(episodes, gen);
  expert.reset(episodes, gen);
  std::vector<flowkit::Conditioning> obs_steps;
  std::vector<std::vector<Vec2>> act_steps;
  std::vector<std::vector<char>> running_steps;
  while (!env.all_done()) {
    std::vector<char> running(episodes);
    for (int64_t i = 0; i < episodes; ++i) running[i] = env.status()[i] == Status::running;
    obs_steps.push_back(observe(env, o_.observation));
    std::vector<Vec2> a = expert.act(gen);
    env.step(a);
    act_steps.push_back(a);
    running_steps.push_back(running);
  }
  const int64_t T = static_cast<int64_t>(act_steps.size());
  Data d;
  d.episodes = episodes;
  std::vector<int64_t> rows_step, rows_ep;
  for (int64_t i = 0; i < episodes; ++i) {
    if (env.status()[i] != Status::success) continue;
    ++d.successes;
    d.left += expert.sides()[i] < 0;
    for (int64_t k = 0; k < T; ++k)
      if (running_steps[k][i]) rows_step.push_back(k), rows_ep.push_back(i);
  }
  const int64_t N = static_cast<int64_t>(rows_step.size());
  torch::Tensor x = torch::zeros({N, o_.chunk, 2});
  float* xp = x.data_ptr<float>();
  std::vector<int64_t> goal(N), ep(N);
  for (int64_t j = 0; j < N; ++j) {
    int64_t k = rows_step[j], i = rows_ep[j];
    goal[j] = env.goals()[i];
    ep[j] = i;
    for (int64_t c = 0; c < o_.chunk; ++c) {
      int64_t kk = k + c;
      if (kk < T && running_steps[kk][i]) {  // after the episode ends the expert holds still
        xp[(j * o_.chunk + c) * 2] = static_cast<float>(act_steps[kk][i].x);
        xp[(j * o_.chunk + c) * 2 + 1] = static_cast<float>(act_steps[kk][i].y);
      }
    }
  }
  // Gather the observation rows of every field.
  for (const auto& name : obs_steps.front().names()) {
    std::vector<torch::Tensor> per;
    for (int64_t j = 0; j < N; ++j) per.push_back(obs_steps[rows_step[j]].at(name)[rows_ep[j]]);
    d.obs.set(name, N ? torch::stack(per) : torch::zeros({0}));
  }
  d.x = x;
  d.goal = torch::tensor(goal, torch::kLong);
  d.episode = torch::tensor(ep, torch::kLong);
  if (N == 0) throw flowkit::Error("dm1.bireach: the expert produced no successful demonstration");
  return d;
}

flowkit::Batch BiReachDomain::rows(const Data& d, const torch::Tensor& index) const {
  flowkit::Batch b;
  b.set("x", d.x.index_select(0, index));
  for (const auto& name : d.obs.names()) b.set(name, d.obs.at(name).index_select(0, index));
  b.set("goal", d.goal.index_select(0, index));  // a label for diagnostics; policies read obs/proprio only
  return b;
}

flowkit::Batch BiReachDomain::train_batch(int64_t n, torch::Generator& gen) {
  torch::Tensor idx = flowkit::random::randint(0, train_.x.size(0), {n}, gen);
  return rows(train_, idx);
}

flowkit::Batch BiReachDomain::reference(int64_t n, torch::Generator& gen) {
  torch::Tensor idx = flowkit::random::randint(0, heldout_.x.size(0), {n}, gen);
  return rows(heldout_, idx);
}

flowkit::Conditioning BiReachDomain::sample_conditions(int64_t, int64_t n, torch::Generator& gen) const {
  BiReachEnv env(o_.env);
  env.reset(n, gen);
  return observe(env, o_.observation);
}

std::map<std::string, std::vector<int64_t>> BiReachDomain::condition_shapes() const {
  return observation_shapes(o_.env, o_.observation);
}

std::vector<std::string> BiReachDomain::metric_names() const { return {"energy"}; }

nlohmann::json BiReachDomain::evaluate(const flowkit::Batch& generated, const flowkit::Batch& reference,
                                       const std::vector<std::string>& metrics, torch::Generator&) const {
  nlohmann::json out = nlohmann::json::object();
  for (const auto& m : metrics) {
    if (m == "energy") out["energy"] = flowkit::metrics::energy_distance(generated.at("x"), reference.at("x"));
    else throw flowkit::Error("dm1.bireach: unknown metric '" + m + "'");
  }
  return out;
}

std::vector<std::string> BiReachDomain::write(const flowkit::Batch& samples, const std::string& dir,
                                              const std::string& stem) const {
  std::filesystem::create_directories(dir);
  std::string file = (std::filesystem::path(dir) / (stem + ".csv")).string();
  std::ofstream f(file);
  torch::Tensor x = samples.at("x").to(torch::kCPU, torch::kDouble).flatten(1).contiguous();
  f << "# one action chunk per row: a0x,a0y,a1x,a1y,...\n";
  for (int64_t i = 0; i < x.size(0); ++i) {
    for (int64_t j = 0; j < x.size(1); ++j) f << (j ? "," : "") << x[i][j].item<double>();
    f << "\n";
  }
  if (!f) throw flowkit::Error("cannot write '" + file + "'");
  return {file};
}

nlohmann::json BiReachDomain::rollout(const flowkit::Policy& policy, const std::vector<std::string>& metrics,
                                      torch::Generator& gen) const {
  const int64_t n = o_.rollouts;
  BiReachEnv env(o_.env);
  env.reset(n, gen);
  int64_t calls = 0;
  double policy_seconds = 0;
  flowkit::Progress progress("rollouts", n);
  int64_t reported = 0;
  while (!env.all_done()) {
    int64_t finished = 0;
    for (int64_t i = 0; i < n; ++i) finished += env.status()[i] != Status::running;
    progress.advance(finished - reported);
    reported = finished;
    flowkit::Conditioning obs = observe(env, o_.observation);
    auto t0 = std::chrono::steady_clock::now();
    torch::Tensor chunk = policy(obs, gen);
    policy_seconds += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    ++calls;
    chunk = chunk.to(torch::kCPU, torch::kDouble).reshape({n, -1, 2}).contiguous();
    const int64_t steps = std::min<int64_t>(o_.execute, chunk.size(1));
    auto acc = chunk.accessor<double, 3>();
    for (int64_t k = 0; k < steps && !env.all_done(); ++k) {
      std::vector<Vec2> a(n);
      for (int64_t i = 0; i < n; ++i) a[i] = {acc[i][k][0], acc[i][k][1]};
      env.step(a);
    }
  }
  double succ = 0, coll = 0, tout = 0, left = 0, sided = 0, succ_left = 0, succ_right = 0;
  for (int64_t i = 0; i < n; ++i) {
    Status s = env.status()[i];
    succ += s == Status::success;
    coll += s == Status::collision;
    tout += s == Status::timeout;
    if (env.side()[i] != 0) {
      ++sided;
      left += env.side()[i] < 0;
      if (s == Status::success) (env.side()[i] < 0 ? succ_left : succ_right) += 1;
    }
  }
  const double N = static_cast<double>(n);
  auto [slo, shi] = wilson(succ, N);
  auto [clo, chi] = wilson(coll, N);
  double lf = sided > 0 ? left / sided : 0.5;
  auto [llo, lhi] = wilson(left, sided);
  nlohmann::json out = {{"episodes", n},
                        {"success", succ / N}, {"success_ci95", {slo, shi}},
                        {"collision", coll / N}, {"collision_ci95", {clo, chi}},
                        {"timeout", tout / N},
                        {"left_fraction", lf}, {"left_fraction_ci95", {llo, lhi}},
                        {"mode_balance", sided > 0 ? 1.0 - std::abs(2 * lf - 1) : 0.0},
                        {"success_left", succ_left}, {"success_right", succ_right},
                        {"policy_calls", calls},
                        {"policy_ms_per_call_batch", 1000.0 * policy_seconds / std::max<int64_t>(calls, 1)}};
  for (const auto& m : metrics) {
    if (m == "energy") {
      // Open-loop: the policy on held-out demonstration observations vs their action chunks.
      const int64_t m_rows = std::min<int64_t>(heldout_.x.size(0), 512);
      torch::Tensor idx = torch::linspace(0, static_cast<double>(heldout_.x.size(0) - 1), m_rows).to(torch::kLong);
      flowkit::Batch ref = rows(heldout_, idx);
      const flowkit::Conditioning c = ref.without({"x"});
      out["energy"] = flowkit::metrics::energy_distance(policy(c, gen), ref.at("x"));
    } else {
      throw flowkit::Error("dm1.bireach: unknown metric '" + m + "'");
    }
  }
  return out;
}

// ---- factory ------------------------------------------------------------------------------

DomainOptions domain_options(const flowkit::Config& cfg) {
  DomainOptions o;
  o.observation = cfg.get<std::string>("observation");
  o.demos = cfg.get<int64_t>("demos");
  o.heldout_demos = cfg.get<int64_t>("heldout_demos");
  o.data_seed = cfg.get<int64_t>("data_seed");
  o.chunk = cfg.get<int64_t>("chunk");
  o.execute = cfg.get<int64_t>("execute");
  o.rollouts = cfg.get<int64_t>("rollouts");
  o.env.horizon = cfg.get<int64_t>("horizon");
  o.env.goals = cfg.get<int64_t>("goals");
  o.env.image_size = cfg.get<int64_t>("image_size");
  o.expert.noise = cfg.get<double>("expert_noise");
  if (o.execute > o.chunk) cfg.fail("execute", "must be <= chunk");
  return o;
}

std::unique_ptr<flowkit::Component> make_domain(const flowkit::Config& cfg, const flowkit::BuildContext&) {
  return std::make_unique<BiReachDomain>(domain_options(cfg));
}

}  // namespace dm1
