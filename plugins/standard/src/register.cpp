// Registration of every component, parameter helpers and generator-aware random draws.
#include <torch/torch.h>

#include "flowkit/component.h"
#include "standard/affine_path.h"
#include "standard/cfm_loss.h"
#include "standard/domains.h"
#include "standard/mlp.h"
#include "standard/ode_solvers.h"
#include "standard/register.h"
#include "standard/util.h"

namespace standard {

// ---- parameters -------------------------------------------------------------------------

static thread_local ParamRecorder* g_recorder = nullptr;

ParamRecorder::ParamRecorder() : previous_(g_recorder) { g_recorder = this; }
ParamRecorder::~ParamRecorder() { g_recorder = previous_; }
void ParamRecorder::record(ParamRecord r) {
  if (g_recorder) g_recorder->records_.push_back(std::move(r));
}

std::string choice_param(const flowkit::Config& cfg, const std::string& key, const std::string& fallback,
                         const std::vector<std::string>& choices) {
  ParamRecorder::record({key, "string", true, fallback, choices});
  std::string v = cfg.get<std::string>(key, fallback);
  if (std::find(choices.begin(), choices.end(), v) == choices.end()) {
    std::string list;
    for (const auto& c : choices) list += (list.empty() ? "" : ", ") + c;
    cfg.fail(key, "'" + v + "' is not one of: " + list);
  }
  return v;
}

std::optional<std::vector<double>> optional_number_array(const flowkit::Config& cfg, const std::string& key) {
  ParamRecorder::record({key, "array", false, nullptr, {}});
  if (!cfg.has(key) || cfg.json().at(key).is_null()) return std::nullopt;
  const auto& v = cfg.json().at(key);
  if (!v.is_array()) cfg.fail(key, std::string("expected an array of numbers, found ") + v.type_name());
  std::vector<double> out;
  for (const auto& e : v) {
    if (!e.is_number()) cfg.fail(key, "expected an array of numbers, found an element " + e.dump());
    out.push_back(e.get<double>());
  }
  return out;
}

std::optional<std::string> optional_string(const flowkit::Config& cfg, const std::string& key) {
  ParamRecorder::record({key, "string", false, nullptr, {}});
  if (!cfg.has(key) || cfg.json().at(key).is_null()) return std::nullopt;
  return cfg.get<std::string>(key);
}

// ---- random draws -----------------------------------------------------------------------

torch::Tensor randn(torch::IntArrayRef size, torch::Generator& gen, const torch::TensorOptions& options) {
  return torch::randn(size, gen, options.device(gen.device())).to(options.device());
}

torch::Tensor rand(torch::IntArrayRef size, torch::Generator& gen, const torch::TensorOptions& options) {
  return torch::rand(size, gen, options.device(gen.device())).to(options.device());
}

torch::Tensor randint(int64_t high, torch::IntArrayRef size, torch::Generator& gen,
                      const torch::TensorOptions& options) {
  return torch::randint(high, size, gen, options.device(gen.device())).to(options.device());
}

torch::Tensor randperm(int64_t n, torch::Generator& gen) {
  return torch::randperm(n, gen, torch::TensorOptions().dtype(torch::kLong).device(gen.device())).to(torch::kCPU);
}

// ---- registration -----------------------------------------------------------------------

void register_components(flowkit::Registry& r) {
  using flowkit::Kind;
  r.add(Kind::domain, "toy2d", &make_toy2d);
  r.add(Kind::domain, "digits", &make_digits);
  r.add(Kind::path, "affine", &make_affine_path);
  r.add(Kind::model, "mlp", &make_mlp);
  r.add(Kind::loss, "cfm", &make_cfm);
  r.add(Kind::solver, "euler", &make_euler);
  r.add(Kind::solver, "midpoint", &make_midpoint);
  r.add(Kind::solver, "heun", &make_heun);
  r.add(Kind::solver, "rk4", &make_rk4);
  r.add(Kind::solver, "dopri5", &make_dopri5);
  r.add(Kind::solver, "euler_maruyama", &make_euler_maruyama);
}

}  // namespace standard
