// The MeanFlow and direct samplers, the component factories and their registration.
#include <torch/torch.h>

#include "dm1/dm1.h"
#include "flowkit/component.h"
#include "flowkit/error.h"
#include "flowkit/path.h"

namespace dm1 {

using flowkit::Range;

std::string choice(const flowkit::Config& cfg, const std::string& key, const std::string& fallback,
                   const std::vector<std::string>& choices) {
  std::string v = cfg.get<std::string>(key, fallback);
  if (std::find(choices.begin(), choices.end(), v) == choices.end()) {
    std::string list;
    for (const auto& c : choices) list += (list.empty() ? "" : ", ") + c;
    cfg.fail(key, "'" + v + "' is not one of: " + list);
  }
  return v;
}

// ---- solvers ------------------------------------------------------------------------------

torch::Tensor MeanFlowSolver::grid(int64_t steps) const {
  return torch::linspace(1.0, 0.0, (steps > 0 ? steps : steps_) + 1, torch::kDouble);
}

flowkit::SolveResult MeanFlowSolver::integrate(const flowkit::VectorField& f, const torch::Tensor& x0,
                                               const torch::Tensor& grid, torch::Generator&, bool keep) const {
  return flowkit::euler_integrate(f, x0, grid, keep);
}

flowkit::SolveResult MeanFlowSolver::sample(flowkit::Model& model, const flowkit::Path* path,
                                            const flowkit::SampleRequest& req, torch::Generator& gen) const {
  torch::NoGradGuard ng;
  std::vector<int64_t> shape{req.n};
  shape.insert(shape.end(), req.item_shape.begin(), req.item_shape.end());
  torch::Tensor z = path ? path->prior(req.n, req.item_shape, gen, req.options) : randn(shape, gen, req.options);
  const int64_t k = req.steps > 0 ? req.steps : steps_;
  flowkit::Conditioning cond = req.cond;
  flowkit::SolveResult out;
  if (req.keep_intermediates) out.intermediates.push_back(z);
  for (int64_t i = 0; i < k; ++i) {
    // t_i = 1 - i/k (noise side) down to r = t_{i+1}.
    const double t = 1.0 - static_cast<double>(i) / static_cast<double>(k);
    const double r = 1.0 - static_cast<double>(i + 1) / static_cast<double>(k);
    cond.set("r", torch::full({req.n}, r, req.options));
    torch::Tensor u = model.forward(z, torch::full({req.n}, t, req.options), cond);
    z = z - (t - r) * u;
    if (clip_ > 0) z = z.clamp(-clip_, clip_);
    ++out.nfe;
    if (req.keep_intermediates) out.intermediates.push_back(z);
  }
  out.x = z;
  return out;
}

torch::Tensor DirectSolver::grid(int64_t steps) const {
  return torch::linspace(0.0, 1.0, (steps > 0 ? steps : steps_) + 1, torch::kDouble);
}

flowkit::SolveResult DirectSolver::integrate(const flowkit::VectorField& f, const torch::Tensor& x0,
                                             const torch::Tensor& grid, torch::Generator&, bool keep) const {
  return flowkit::euler_integrate(f, x0, grid, keep);
}

flowkit::SolveResult DirectSolver::sample(flowkit::Model& model, const flowkit::Path*, const flowkit::SampleRequest& req,
                                          torch::Generator&) const {
  torch::NoGradGuard ng;
  std::vector<int64_t> shape{req.n};
  shape.insert(shape.end(), req.item_shape.begin(), req.item_shape.end());
  flowkit::Conditioning cond = req.cond;
  torch::Tensor zero = torch::zeros({req.n}, req.options);
  cond.set("r", zero);
  torch::Tensor x = model.forward(torch::zeros(shape, req.options), zero, cond);
  if (clip_ > 0) x = x.clamp(-clip_, clip_);
  flowkit::SolveResult out;
  out.x = x;
  out.nfe = 1;
  if (req.keep_intermediates) out.intermediates.push_back(x);
  return out;
}

// ---- factories ----------------------------------------------------------------------------

std::unique_ptr<flowkit::Component> make_domain(const flowkit::Config& cfg, const flowkit::BuildContext&) {
  DomainOptions o;
  o.observation = choice(cfg, "observation", "state", {"state", "image"});
  o.demos = cfg.get<int64_t>("demos", 200, Range::at_least(1));
  o.heldout_demos = cfg.get<int64_t>("heldout_demos", 50, Range::at_least(1));
  o.data_seed = cfg.get<int64_t>("data_seed", 0, Range::at_least(0));
  o.chunk = cfg.get<int64_t>("chunk", 8, Range::at_least(1));
  o.execute = cfg.get<int64_t>("execute", 4, Range::at_least(1));
  if (o.execute > o.chunk) cfg.fail("execute", "must be <= chunk");
  o.rollouts = cfg.get<int64_t>("rollouts", 200, Range::at_least(1));
  o.env.horizon = cfg.get<int64_t>("horizon", 80, Range::at_least(1));
  o.env.goals = cfg.get<int64_t>("goals", 8, Range::at_least(1));
  o.env.image_size = cfg.get<int64_t>("image_size", 16, Range::at_least(4));
  o.expert.noise = cfg.get<double>("expert_noise", 0.05, Range::at_least(0.0));
  return std::make_unique<BiReachDomain>(o);
}

std::unique_ptr<flowkit::Component> make_policy(const flowkit::Config& cfg, const flowkit::BuildContext& ctx) {
  PolicyOptions o;
  o.hidden = cfg.get<int64_t>("hidden", 256, Range::at_least(1));
  o.layers = cfg.get<int64_t>("layers", 3, Range::at_least(1));
  o.obs_hidden = cfg.get<int64_t>("obs_hidden", 128, Range::at_least(1));
  o.obs_embed = cfg.get<int64_t>("obs_embed", 64, Range::at_least(1));
  o.time_embed = cfg.get<int64_t>("time_embed", 16, Range::at_least(2));
  o.time_scale = cfg.get<double>("time_scale", 1.0, Range::positive());
  o.time_inputs = choice(cfg, "time_inputs", "t_h", {"t_h", "t_r"});
  if (!ctx.domain) cfg.fail("type", "dm1.policy needs a domain (action shape, observation shapes)");
  std::vector<int64_t> shape = ctx.domain->item_shape();
  if (shape.empty()) cfg.fail("type", "dm1.policy needs a domain with a fixed item shape");
  o.action_dim = 1;
  for (int64_t d : shape) o.action_dim *= d;
  auto g = at::detail::createCPUGenerator(0);
  flowkit::Conditioning c = ctx.domain->sample_conditions(0, 2, g);
  if (!c.has("obs")) cfg.fail("type", "dm1.policy needs a domain whose conditions hold an observation 'obs'");
  auto s = c.at("obs").sizes();
  o.obs_shape.assign(s.begin() + 1, s.end());
  if (o.obs_shape.size() == 2) o.obs_shape.insert(o.obs_shape.begin(), 1);
  if (o.obs_shape.size() != 1 && o.obs_shape.size() != 3)
    cfg.fail("type", "dm1.policy: 'obs' must be [B, D], [B, H, W] or [B, C, H, W]");
  o.proprio_dim = c.has("proprio") ? c.at("proprio").size(1) : 0;
  return std::make_unique<PolicyModel>(o, shape, ctx.device);
}

std::unique_ptr<flowkit::Component> make_meanflow_loss(const flowkit::Config& cfg, const flowkit::BuildContext&) {
  MeanFlowOptions o;
  o.ratio_r_neq_t = cfg.get<double>("ratio_r_neq_t", 0.5, Range{0.0, 1.0});
  o.p_mean = cfg.get<double>("p_mean", -0.4);
  o.p_std = cfg.get<double>("p_std", 1.0, Range::positive());
  o.weighting = choice(cfg, "weighting", "mse", {"mse", "adaptive"});
  o.adaptive_p = cfg.get<double>("adaptive_p", 1.0, Range::at_least(0.0));
  o.adaptive_c = cfg.get<double>("adaptive_c", 0.01, Range::positive());
  o.jvp = choice(cfg, "jvp", "forward_ad", {"forward_ad", "double_backward"});
  o.dispersive_weight = cfg.get<double>("dispersive_weight", 0.0, Range::at_least(0.0));
  o.dispersive_form = choice(cfg, "dispersive_form", "wang_he", {"wang_he", "dm1"});
  o.dispersive_tau = cfg.get<double>("dispersive_tau", 0.5, Range::positive());
  o.dispersive_taps = choice(cfg, "dispersive_taps", "obs_time", {"obs", "obs_time", "trunk", "all"});
  o.dispersive_pass = choice(cfg, "dispersive_pass", "same", {"same", "clean"});
  o.dispersive_normalize = cfg.get<bool>("dispersive_normalize", true);
  return std::make_unique<MeanFlowLoss>(o);
}

std::unique_ptr<flowkit::Component> make_regression_loss(const flowkit::Config&, const flowkit::BuildContext&) {
  return std::make_unique<RegressionLoss>();
}

std::unique_ptr<flowkit::Component> make_meanflow_solver(const flowkit::Config& cfg, const flowkit::BuildContext&) {
  int64_t steps = cfg.get<int64_t>("steps", 1, Range::at_least(1));
  double clip = cfg.get<double>("clip", 1.0, Range::at_least(0.0));
  return std::make_unique<MeanFlowSolver>(steps, clip);
}

std::unique_ptr<flowkit::Component> make_direct_solver(const flowkit::Config& cfg, const flowkit::BuildContext&) {
  int64_t steps = cfg.get<int64_t>("steps", 1, Range::at_least(1));
  double clip = cfg.get<double>("clip", 1.0, Range::at_least(0.0));
  return std::make_unique<DirectSolver>(steps, clip);
}

void register_components(flowkit::Registry& r) {
  using flowkit::Kind;
  r.add(Kind::domain, "bireach", &make_domain);
  r.add(Kind::model, "policy", &make_policy);
  r.add(Kind::loss, "meanflow", &make_meanflow_loss);
  r.add(Kind::loss, "regression", &make_regression_loss);
  r.add(Kind::solver, "meanflow_sampler", &make_meanflow_solver);
  r.add(Kind::solver, "direct", &make_direct_solver);
}

}  // namespace dm1
