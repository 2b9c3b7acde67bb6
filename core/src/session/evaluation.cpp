// Evaluation: sample-based metrics against held-out data, or a policy rolled out in the
// domain's environment; the exact NLL (bits/dim) of invertible models; representation probes.
#include <chrono>

#include "flowkit/core/diagnostics.h"
#include "flowkit/core/embed.h"
#include "session/state.h"

namespace flowkit::core {
namespace {

std::vector<std::string> requested_metrics(const SessionState& s) {
  std::vector<std::string> metrics = s.eval_cfg.get<nlohmann::json>("metrics").get<std::vector<std::string>>();
  const auto known = s.parts.domain->metric_names();
  if (metrics.empty()) return known;
  for (size_t i = 0; i < metrics.size(); ++i)
    if (std::find(known.begin(), known.end(), metrics[i]) == known.end())
      throw ConfigError(s.pipeline.file, "/eval/metrics/" + std::to_string(i),
                        "the domain has no metric \"" + metrics[i] + "\"" + did_you_mean(metrics[i], known) +
                            "; it has: " + fmt::format("{}", fmt::join(known, ", ")));
  return metrics;
}

// Exact negative log-likelihood of the reference items, in bits per dimension.
double reference_bits_per_dim(SessionState& s, InvertibleModel& flow, torch::Generator& g) {
  torch::NoGradGuard no_grad;
  auto swap = s.ema->swap_in(s.sample_cfg.get<bool>("use_ema"));
  Batch ref = s.parts.domain->reference(s.eval_cfg.get<int64_t>("reference_count"), g).to(s.device);
  const torch::Tensor& x = ref.at("x");
  s.parts.model->module().eval();
  torch::Tensor ll = flow.log_likelihood(x, ref.without({"x"}));
  s.parts.model->module().train();
  return bits_per_dim(ll, x[0].numel());
}

// Effective rank, mean pairwise distance and linear-probe accuracy of each representation
// the model exposes, on reference items labelled by the field `label`.
nlohmann::json probe_representations(SessionState& s, const std::string& label, torch::Generator& g) {
  torch::NoGradGuard no_grad;
  auto* rep_model = capability<RepresentationModel>(*s.parts.model);
  if (!rep_model) {
    spdlog::warn("eval.probe_label is set but the model exposes no representations");
    return nlohmann::json::object();
  }
  auto swap = s.ema->swap_in(s.sample_cfg.get<bool>("use_ema"));
  Batch ref = s.parts.domain->reference(s.eval_cfg.get<int64_t>("reference_count"), g).to(s.device);
  if (!ref.has(label))
    throw ConfigError(s.pipeline.file, "/eval/probe_label",
                      "the reference batch has no field \"" + label + "\"; it has: " + fmt::format("{}", fmt::join(ref.names(), ", ")));
  const torch::Tensor& x = ref.at("x");
  s.parts.model->module().eval();
  TensorMap reps = rep_model->forward_with_representations(x, torch::ones({x.size(0)}, x.options()), ref.without({"x"})).second;
  s.parts.model->module().train();
  nlohmann::json out = nlohmann::json::object();
  for (const auto& [name, z] : reps)
    out[name] = {{"dim", z.flatten(1).size(1)},
                 {"effective_rank", effective_rank(z)},
                 {"mean_pairwise_distance", mean_pairwise_distance(z)},
                 {"probe_accuracy", linear_probe_accuracy(z, ref.at(label))}};
  return out;
}

// Log-likelihood of the reference items under the flow, by the reverse ODE.
torch::Tensor reference_flow_log_likelihood(SessionState& s, const std::string& kind, torch::Generator& g) {
  const auto [integrator, prior] = likelihood_parts(s, "/eval/likelihood");
  torch::NoGradGuard no_grad;
  auto swap = s.ema->swap_in(s.sample_cfg.get<bool>("use_ema"));
  Batch ref = s.parts.domain->reference(s.eval_cfg.get<int64_t>("reference_count"), g).to(s.device);
  const Conditioning cond = ref.without({"x"});
  Model& model = *s.parts.model;
  VectorField field = [&](const torch::Tensor& x, const torch::Tensor& t) { return model.forward(x, t.expand({x.size(0)}), cond); };
  int64_t steps = s.eval_cfg.get<int64_t>("likelihood_steps");
  if (steps == 0) steps = s.sample_cfg.get<int64_t>("steps");
  const torch::Tensor& x = ref.at("x");
  model.module().eval();
  FlowLikelihood r = data_log_likelihood(field, prior, integrator, integrator.grid(steps).to(x.options()), x,
                                         divergence_options(kind), g);
  model.module().train();
  return r.log_likelihood;
}

// The straightness of the sampled (guided, EMA) velocity field along the solver's own grid.
Straightness measure_straightness(SessionState& s, int64_t steps, torch::Generator& g) {
  const auto* integrator = capability<OdeIntegrator>(*s.parts.solver);
  if (!integrator)
    throw ConfigError(s.pipeline.file, "/eval/straightness_steps", "the solver integrates no ODE (it has no OdeIntegrator capability)");
  if (!s.parts.path) throw ConfigError(s.pipeline.file, "/eval/straightness_steps", "the pipeline has no path (no prior to start from)");
  torch::NoGradGuard no_grad;
  auto swap = s.ema->swap_in(s.sample_cfg.get<bool>("use_ema"));
  std::optional<GuidedModel> guided;
  if (s.parts.guidance) guided.emplace(*s.parts.model, *s.parts.guidance, s.parts.path);
  Model& model = guided ? static_cast<Model&>(*guided) : *s.parts.model;
  const int64_t n = std::min(s.sample_cfg.get<int64_t>("count"), s.sample_cfg.get<int64_t>("batch_size"));
  const auto options = torch::TensorOptions().dtype(torch::kFloat32).device(s.device);
  const Conditioning cond = s.parts.domain->sample_conditions(0, n, g).to(s.device);
  const torch::Tensor x0 = s.parts.path->prior(n, s.parts.domain->item_shape(), g, options);
  VectorField field = [&](const torch::Tensor& x, const torch::Tensor& t) { return model.forward(x, t.expand({x.size(0)}), cond); };
  s.parts.model->module().eval();
  Straightness out = flow_straightness(field, x0, integrator->grid(steps).to(options));
  s.parts.model->module().train();
  return out;
}

}  // namespace

nlohmann::json evaluate_run(SessionState& s) {
  if (!s.parts.domain) throw Error("evaluation needs a domain in the pipeline");
  auto eval_gen = at::detail::createCPUGenerator(static_cast<uint64_t>(s.eval_cfg.get<int64_t>("seed")));
  const std::vector<std::string> metrics = requested_metrics(s);
  InvertibleModel* flow = capability<InvertibleModel>(*s.parts.model);
  if (!s.parts.solver) throw Error("evaluation needs a solver in the pipeline");
  int64_t nfe = 0, network = 0;
  nlohmann::json result = nlohmann::json::object();
  if (const auto* env = capability<Environment>(*s.parts.domain)) {
    // Closed loop: the environment asks the policy for an action chunk per observation row.
    auto swap = s.ema->swap_in(s.sample_cfg.get<bool>("use_ema"));
    Policy policy = policy_of(s, 0);
    result = env->rollout(policy, metrics, eval_gen);
    nfe = s.last_nfe;
    network = s.last_network_evaluations;
    s.parts.model->module().train();
  } else {
    auto g = make_generator(s.device, static_cast<uint64_t>(s.sample_cfg.get<int64_t>("seed")));
    const auto t0 = std::chrono::steady_clock::now();
    Batch samples = generate(s, s.sample_cfg.get<int64_t>("count"), s.sample_cfg.get<int64_t>("steps"),
                             s.sample_cfg.get<bool>("use_ema"), g, &nfe, &network);
    const double sample_seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    Batch reference = s.parts.domain->reference(s.eval_cfg.get<int64_t>("reference_count"), eval_gen);
    result = s.parts.domain->evaluate(samples, reference, metrics, eval_gen);
    result["samples"] = samples.at("x").size(0);
    if (samples.has("log_likelihood"))  // from the sampling solve itself (sample.log_likelihood)
      result["sample_nll_bits_per_dim"] = bits_per_dim(samples.at("log_likelihood"), samples.at("x")[0].numel());
    result["sample_seconds"] = sample_seconds;  // wall time of generating them (all chunks)
  }
  if (flow) result["nll_bits_per_dim"] = reference_bits_per_dim(s, *flow, eval_gen);
  else if (const std::string kind = s.eval_cfg.get<std::string>("likelihood"); kind != "off") {
    const torch::Tensor ll = reference_flow_log_likelihood(s, kind, eval_gen);
    int64_t dims = 1;
    for (int64_t d : s.parts.domain->item_shape()) dims *= d;
    result["nll_bits_per_dim"] = bits_per_dim(ll, dims);
    result["nll_nats"] = -ll.to(torch::kDouble).mean().item<double>();
  }
  if (const int64_t steps = s.eval_cfg.get<int64_t>("straightness_steps"); steps > 0) {
    auto g = make_generator(s.device, static_cast<uint64_t>(s.sample_cfg.get<int64_t>("seed")));
    const Straightness st = measure_straightness(s, steps, g);
    result["straightness_gap"] = st.gap;
    result["straightness_relative"] = st.relative;
  }
  const std::string label = s.eval_cfg.get<std::string>("probe_label");
  if (!label.empty()) result["representations"] = probe_representations(s, label, eval_gen);
  if (const auto* data = capability<SkippedData>(*s.parts.domain)) {
    const SkippedRows skipped = data->skipped_rows();  // what the numbers above leave out
    result["data"] = {{"rows", skipped.rows}, {"skipped_rows", skipped.skipped}, {"skipped_reasons", skipped.reasons}};
  }
  result["step"] = s.step;
  result["nfe"] = nfe;                     // the solver's velocity evaluations per sample
  result["network_evaluations"] = network;  // the network's (guidance may add passes)
  const std::string& eval_label = s.options.eval_label;
  if (eval_label.empty()) {
    io::write_file_atomic(s.dir.eval().string(), result.dump(2) + "\n");
    append_json_line(s.dir.metrics(), {{"eval", result}});
  } else {
    std::filesystem::create_directories(s.dir.labelled_eval(eval_label).parent_path());
    io::write_file_atomic(s.dir.labelled_eval(eval_label).string(), result.dump(2) + "\n");
    append_json_line(s.dir.metrics(), {{"eval", result}, {"label", eval_label}});
  }
  return result;
}

}  // namespace flowkit::core
