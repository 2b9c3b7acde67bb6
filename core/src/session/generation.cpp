// Generation: samples in chunks through the pipeline's solver (EMA weights), a trained run as
// a policy, and opening a finished run for inference (flowkit/core/embed.h).
#include "flowkit/core/embed.h"
#include "flowkit/core/memory_budget.h"
#include "session/state.h"

namespace fs = std::filesystem;

namespace flowkit::core {

std::pair<const OdeIntegrator&, const PriorDensity&> likelihood_parts(SessionState& s, const std::string& json_path) {
  const auto* integrator = capability<OdeIntegrator>(*s.parts.solver);
  const auto* prior = capability<PriorDensity>(s.parts.path);
  if (!integrator) throw ConfigError(s.pipeline.file, json_path, "the solver integrates no ODE (it has no OdeIntegrator capability)");
  if (!prior) throw ConfigError(s.pipeline.file, json_path, "the path has no prior density (no PriorDensity capability)");
  // A stochastic integrator (an SDE) gives no density: it is the one whose result on a tiny
  // decay changes with the generator.
  const VectorField decay = [](const torch::Tensor& x, const torch::Tensor&) { return -x; };
  const torch::Tensor x0 = torch::ones({2, 2}, torch::kDouble), grid = integrator->grid(4).to(torch::kDouble);
  torch::Generator g1 = at::detail::createCPUGenerator(1), g2 = at::detail::createCPUGenerator(2);
  if (!torch::equal(integrator->integrate(decay, x0, grid, g1).x, integrator->integrate(decay, x0, grid, g2).x))
    throw ConfigError(s.pipeline.file, json_path, "the solver is stochastic (an SDE); a likelihood needs a deterministic ODE solver");
  return {*integrator, *prior};
}

namespace {
// The samples and their log-likelihood ("log_likelihood" field) from one forward solve of the
// solver's integrator.
SolveResult sample_with_likelihood(SessionState& s, Model& model, const SampleRequest& req, const std::string& kind,
                                   torch::Generator& g) {
  const auto [integrator, prior] = likelihood_parts(s, "/sample/log_likelihood");
  const torch::Tensor x0 = s.parts.path->prior(req.n, req.item_shape, g, req.options);
  VectorField field = [&](const torch::Tensor& x, const torch::Tensor& t) { return model.forward(x, t.expand({x.size(0)}), req.cond); };
  FlowLikelihood f = sample_log_likelihood(field, prior, integrator, integrator.grid(req.steps).to(req.options), x0,
                                           divergence_options(kind), g);
  SolveResult r;
  r.x = f.x;
  r.nfe = f.nfe;
  r.fields.set("log_likelihood", f.log_likelihood);
  return r;
}
}  // namespace

namespace {
// The steps that spend exactly `nfe` velocity evaluations: the solver's cost per step is
// measured on a probe ODE at 1, 2 and 3 steps and must be the same c each time (an adaptive
// solver's is not); nfe must then be a multiple of c.
int64_t steps_for_nfe(const SessionState& s, int64_t nfe) {
  const Config& cfg = s.sample_cfg;
  const auto* ode = capability<OdeIntegrator>(*s.parts.solver);
  const std::string type = s.pipeline.resolved.at("solver").at("type").get<std::string>();
  if (!ode) cfg.fail("nfe", type + " does not integrate on a time grid, so its evaluations cannot be set; set its own steps");
  VectorField decay = [](const torch::Tensor& x, const torch::Tensor& t) { return -x * (1 + t); };
  auto opts = torch::TensorOptions().dtype(torch::kDouble);
  std::vector<int64_t> cost;
  for (int64_t k = 1; k <= 3; ++k) {
    torch::Generator g = at::detail::createCPUGenerator(0);
    SolveResult r = ode->integrate(decay, torch::ones({1, 1}, opts), ode->grid(k).to(opts), g);
    cost.push_back(r.nfe);
  }
  const int64_t c = cost[0];
  if (c <= 0 || cost[1] != 2 * c || cost[2] != 3 * c)
    cfg.fail("nfe", fmt::format("{} does not spend a fixed number of evaluations a step ({}, {}, {} for 1, 2, 3 steps), so "
                                "sample.nfe cannot be honoured exactly; set its own steps or tolerances", type, cost[0], cost[1], cost[2]));
  if (nfe % c != 0)
    cfg.fail("nfe", fmt::format("{} spends {} evaluations a step, so {} is not reachable exactly; the nearest are {} and {}", type, c, nfe,
                                std::max<int64_t>(c, nfe / c * c), (nfe / c + 1) * c));
  return nfe / c;
}
}  // namespace

Batch generate(SessionState& s, int64_t count, int64_t steps, bool use_ema, torch::Generator& g, int64_t* nfe,
               int64_t* network_evaluations) {
  if (!s.parts.solver) throw Error("sampling needs a solver in the pipeline");
  const int64_t requested_nfe = s.sample_cfg.get<int64_t>("nfe");
  if (requested_nfe > 0) {
    if (steps > 0) s.sample_cfg.fail("nfe", "sample.nfe and sample.steps both set the solver's steps; set one");
    steps = steps_for_nfe(s, requested_nfe);
  }
  torch::NoGradGuard no_grad;
  auto swap = s.ema->swap_in(use_ema);
  Model& model = *s.parts.model;
  model.module().eval();
  std::optional<GuidedModel> guided;
  if (s.parts.guidance) guided.emplace(model, *s.parts.guidance, s.parts.path);
  Model& sampled = guided ? static_cast<Model&>(*guided) : model;
  const int64_t chunk = s.sample_cfg.get<int64_t>("batch_size");
  // The samples are held twice (the chunks, then their concatenation): refuse at once what
  // cannot fit rather than after hours of sampling.
  uint64_t item_bytes = sizeof(float);
  for (int64_t d : s.parts.domain->item_shape()) item_bytes *= static_cast<uint64_t>(std::max<int64_t>(d, 1));
  const long double needed = 2.0L * static_cast<long double>(count) * static_cast<long double>(item_bytes);
  if (memory_budget() > 0 && needed > static_cast<long double>(memory_budget()))
    throw Error(fmt::format("{} samples (sample.count) need {} of memory, over the budget of {} (FLOWKIT_MEMORY_LIMIT; "
                            "default 90 % of the memory available at start); lower sample.count",
                            count, format_bytes(static_cast<uint64_t>(std::min(needed, 1.8e19L))), format_bytes(memory_budget())));
  const std::string likelihood_kind = s.sample_cfg.get<std::string>("log_likelihood");
  std::vector<Batch> chunks;
  *nfe = 0;
  Progress progress("sampling", count);
  for (int64_t done = 0; done < count; done += chunk) {
    const int64_t n = std::min(chunk, count - done);
    SampleRequest req;
    req.n = n;
    req.item_shape = s.parts.domain->item_shape();
    req.cond = s.parts.domain->sample_conditions(done, n, g).to(s.device);
    req.steps = steps;
    req.options = torch::TensorOptions().dtype(torch::kFloat32).device(s.device);
    if (guided) guided->reset_evaluations();
    SolveResult r = likelihood_kind == "off" ? s.parts.solver->sample(sampled, s.parts.path, req, g)
                                             : sample_with_likelihood(s, sampled, req, likelihood_kind, g);
    Batch b = req.cond.to(torch::kCPU);
    b.set("x", r.x.to(torch::kCPU));
    for (const auto& [name, value] : r.fields) b.set(name, value.to(torch::kCPU));
    chunks.push_back(std::move(b));
    if (requested_nfe > 0 && r.nfe != requested_nfe)
      throw Error(fmt::format("the solver spent {} evaluations per sample where sample.nfe asked for {}", r.nfe, requested_nfe));
    *nfe = r.nfe;
    if (network_evaluations) *network_evaluations = guided ? guided->evaluations() : r.nfe;
    progress.advance(n);
  }
  model.module().train();
  return TensorMap::cat(chunks);
}

struct SessionAccess {
  static SessionState& state(Session& s) { return *s.impl_; }
};

Policy policy_of(SessionState& s, int64_t steps_override) {
  if (!s.parts.solver) throw Error("a policy needs a solver in the pipeline");
  s.parts.model->module().eval();
  const int64_t nfe = s.sample_cfg.get<int64_t>("nfe");
  const int64_t steps = steps_override > 0 ? steps_override : nfe > 0 ? steps_for_nfe(s, nfe) : s.sample_cfg.get<int64_t>("steps");
  const auto item_shape = s.parts.domain->item_shape();
  const auto options = torch::TensorOptions().dtype(torch::kFloat32).device(s.device);
  // Shared by the policy's copies; the solver sees the guided velocity when there is guidance.
  std::shared_ptr<GuidedModel> guided;
  if (s.parts.guidance) guided = std::make_shared<GuidedModel>(*s.parts.model, *s.parts.guidance, s.parts.path);
  return [&s, steps, item_shape, options, guided](const Conditioning& obs, torch::Generator& g) {
    // Inference mode, not just no-grad: no autograd bookkeeping at all on the hot path.
    c10::InferenceMode inference;
    SampleRequest req;
    req.cond = s.device.is_cpu() ? obs : obs.to(s.device);
    req.n = req.cond.empty() ? 1 : req.cond.begin()->second.size(0);
    req.item_shape = item_shape;
    req.steps = steps;
    req.options = options;
    if (guided) guided->reset_evaluations();
    SolveResult r = s.parts.solver->sample(guided ? static_cast<Model&>(*guided) : *s.parts.model, s.parts.path, req, g);
    s.last_nfe = r.nfe;
    s.last_network_evaluations = guided ? guided->evaluations() : r.nfe;
    return s.device.is_cpu() ? r.x : r.x.to(torch::kCPU);
  };
}

Policy make_policy(Session& session, int64_t steps_override) { return policy_of(SessionAccess::state(session), steps_override); }

int64_t last_policy_nfe(Session& session) { return SessionAccess::state(session).last_nfe; }

std::unique_ptr<Session> open_run(const std::string& run_dir, PluginHost& host, const std::string& checkpoint) {
  RunDirectory dir{fs::path(run_dir)};
  auto v = validate_pipeline_file(dir.resolved_pipeline().string(), host);
  if (!v.ok()) throw Error("cannot open run '" + run_dir + "':\n" + v.report());
  RunOptions o;
  o.runs_root = dir.root().parent_path().string();
  o.run_name = dir.root().filename().string();
  auto session = std::make_unique<Session>(v.pipeline, host, o);
  session->load_checkpoint(checkpoint);
  SessionState& s = SessionAccess::state(*session);
  if (s.sample_cfg.get<bool>("use_ema") && s.ema->enabled()) {
    torch::NoGradGuard no_grad;
    auto params = s.parts.model->module().parameters();
    for (size_t i = 0; i < params.size(); ++i) params[i].copy_(s.ema->weights()[i]);  // inference only: no way back needed
  }
  return session;
}

}  // namespace flowkit::core
