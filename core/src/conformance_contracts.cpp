// The contracts the conformance suite checks, one function per kind and capability; each
// throws a flowkit::Error with the reason when the contract does not hold.
#include "conformance_contracts.h"

#include <filesystem>

#include "flowkit/flowkit.h"

namespace fs = std::filesystem;

namespace flowkit::core::contracts {
namespace {

void require(bool ok, const std::string& why) {
  if (!ok) throw Error(why);
}
double max_abs(const torch::Tensor& a, const torch::Tensor& b) { return (a - b).abs().max().item<double>(); }
torch::Generator gen_of(uint64_t seed) { return at::detail::createCPUGenerator(seed); }

std::pair<torch::Tensor, Conditioning> data(Domain& d, int64_t n, torch::Generator& g);

// Forwards to another model and counts the calls (the honesty of a solver's reported NFE).
class CountingModel : public Model {
 public:
  explicit CountingModel(Model& inner) : inner_(inner) {}
  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& t, const Conditioning& cond) override {
    ++calls;
    return inner_.forward(x, t, cond);
  }
  torch::nn::Module& module() override { return inner_.module(); }
  Component* capability_delegate() override { return &inner_; }
  int64_t calls = 0;

 private:
  Model& inner_;
};

}  // namespace

namespace {
std::pair<torch::Tensor, Conditioning> data(Domain& d, int64_t n, torch::Generator& g) {
  Batch b = d.train_batch(n, g);
  return {b.at("x"), b.without({"x"})};
}
}  // namespace

void domain_contract(Domain& d) {
  auto g = gen_of(5), g2 = gen_of(5);
  Batch batch = d.train_batch(16, g);
  (void)d.train_batch(16, g2);
  auto shape = d.item_shape();
  if (!shape.empty()) {
    std::vector<int64_t> expected = {16};
    expected.insert(expected.end(), shape.begin(), shape.end());
    require(batch.at("x").sizes().equals(expected), "train_batch(16) has the wrong shape");
  }
  Batch r1 = d.reference(64, g), r2 = d.reference(64, g2);
  require(torch::equal(r1.at("x"), r2.at("x")), "reference() is not deterministic for a seed");
  auto metrics = d.metric_names();
  require(!metrics.empty(), "the domain has no metrics");
  if (capability<Environment>(d)) return;  // evaluated by rollouts: the environment capability check
  auto ge = gen_of(9);
  auto result = d.evaluate(d.reference(64, g), r1, metrics, ge);
  for (const auto& m : metrics) {
    require(result.contains(m), "evaluate() omits metric " + m);
    if (result.at(m).is_number()) require(std::isfinite(result.at(m).get<double>()), "metric " + m + " is not finite");
  }
  fs::path tmp = fs::temp_directory_path() / ("flowkit_conformance_" + std::to_string(::getpid()));
  fs::create_directories(tmp);
  for (const auto& f : d.write(r1, tmp.string(), "s")) require(fs::exists(f), "write() reported a missing file " + f);
  fs::remove_all(tmp);
}

void path_contract(Path& p) {
  auto g = gen_of(3), g2 = gen_of(3);
  auto opts = torch::TensorOptions().dtype(torch::kDouble);
  auto x0 = p.prior(6, {3}, g, opts);
  require(x0.sizes().equals({6, 3}), "prior() has the wrong shape");
  require(torch::equal(x0, p.prior(6, {3}, g2, opts)), "prior() is not deterministic for a seed");
  auto x1 = torch::randn({6, 3}, opts);
  auto t = torch::linspace(0.2, 0.8, 6, opts);
  PathSample s = p.sample(x0, x1, t);
  require(s.xt.sizes().equals(x0.sizes()), "sample().xt has the wrong shape");
  if (!s.dxt.defined()) return;  // paths of non-ODE methods may leave the velocity out
  const double h = 1e-6;
  auto fd = (p.sample(x0, x1, t + h).xt - p.sample(x0, x1, t - h).xt) / (2 * h);
  require(max_abs(fd, s.dxt) < 1e-5, "dxt is not the time derivative of xt");
}

void model_contract(Model& m, const BuildContext& ctx) {
  if (!ctx.domain || ctx.domain->item_shape().empty()) return;  // needs a fixed-shape "x"
  auto g = gen_of(2);
  auto [x, cond] = data(*ctx.domain, 4, g);
  auto y = m.forward(x, torch::rand({4}), cond);
  require(y.sizes().equals(x.sizes()), "forward() changes the shape of x");
  y.pow(2).sum().backward();
  size_t with_grad = 0;
  for (const auto& p : m.module().parameters()) with_grad += p.grad().defined();
  require(with_grad > 0, "no parameter receives a gradient");
}

void loss_contract(Loss& l, const BuildContext& ctx) {
  if (!ctx.domain || !ctx.model) return;
  auto g = gen_of(11);
  ctx.model->module().zero_grad();
  LossOutput out = l.compute(*ctx.model, ctx.path, ctx.domain->train_batch(32, g), g);
  require(out.loss.dim() == 0, "the loss is not a scalar");
  require(std::isfinite(out.loss.item<double>()), "the loss is not finite");
  out.loss.backward();
  size_t with_grad = 0;
  for (const auto& p : ctx.model->module().parameters()) with_grad += p.grad().defined();
  require(with_grad > 0, "the loss's gradient reaches no parameter");
}

void solver_contract(Solver& s, const BuildContext& ctx) {
  if (!ctx.domain || !ctx.model) return;
  auto g = gen_of(1), g2 = gen_of(1);
  SampleRequest req;
  req.n = 8;
  req.item_shape = ctx.domain->item_shape();
  req.cond = ctx.domain->sample_conditions(0, 8, g);
  (void)ctx.domain->sample_conditions(0, 8, g2);
  req.steps = 4;
  req.options = torch::TensorOptions().dtype(torch::kFloat32);
  CountingModel counted(*ctx.model);
  SolveResult a = s.sample(counted, ctx.path, req, g);
  // Samplers that evaluate the network through a capability (a flow's inverse, named outputs)
  // are not counted here; those that call forward() must report exactly that many calls.
  require(counted.calls == 0 || a.nfe == counted.calls, "sample() reports nfe = " + std::to_string(a.nfe) + " but evaluated the model " +
                                      std::to_string(counted.calls) + " times");
  SolveResult b = s.sample(*ctx.model, ctx.path, req, g2);
  require(a.x.size(0) == 8, "sample() returns the wrong number of samples");
  require(torch::isfinite(a.x).all().item<bool>(), "samples are not finite");
  require(torch::equal(a.x, b.x), "sample() is not a pure function of its inputs and generator");
  for (const auto& [name, value] : a.fields)
    if (value.is_floating_point()) require(torch::isfinite(value).all().item<bool>(), "field " + name + " is not finite");
}

void guidance_contract(Guidance& guide, const BuildContext& ctx) {
  if (!ctx.domain || !ctx.model) return;
  auto g = gen_of(12);
  auto [x, cond] = data(*ctx.domain, 8, g);
  cond = ctx.domain->sample_conditions(0, 8, g);  // what sampling conditions on
  torch::NoGradGuard no_grad;  // as the host samples
  auto t = torch::linspace(0.05, 0.95, 8, x.options());
  int64_t e1 = 0, e2 = 0;
  torch::Tensor v = guide.velocity(*ctx.model, ctx.path, x, t, cond, &e1);
  torch::Tensor w = guide.velocity(*ctx.model, ctx.path, x, t, cond, &e2);
  require(v.sizes() == x.sizes(), "velocity() does not have the shape of x");
  require(torch::isfinite(v).all().item<bool>(), "velocity() is not finite");
  require(torch::equal(v, w) && e1 == e2, "velocity() is not a pure function of its inputs");
  require(e1 >= 1, "velocity() reports no network evaluations");
  GuidedModel guided(*ctx.model, guide, ctx.path);
  (void)guided.forward(x, t, cond);
  require(guided.evaluations() == e1, "GuidedModel does not count the evaluations velocity() reports");
}

void capability_contract(const std::string& name, Component& c, const BuildContext& ctx) {
  auto opts = torch::TensorOptions().dtype(torch::kDouble);
  if (name == "ode_integrator") {
    auto& ode = *capability<OdeIntegrator>(c);
    torch::Tensor grid = ode.grid(0).to(torch::kDouble);
    require(grid.dim() == 1 && grid.size(0) >= 2, "grid(0) is not a 1-D grid of at least two times");
    auto steps = grid.diff();
    require((steps > 0).all().item<bool>() || (steps < 0).all().item<bool>(), "grid(0) is not monotone");
    // dx/dt = -x / span takes x(t_start) = 1 to exp(-1), whatever the grid's span.
    const double span = (grid[-1] - grid[0]).item<double>();
    VectorField decay = [span](const torch::Tensor& x, const torch::Tensor&) { return -x / span; };
    auto x0 = torch::ones({5, 2}, opts);
    auto g1 = gen_of(7), g2 = gen_of(7);
    SolveResult a = ode.integrate(decay, x0, grid, g1, true);
    SolveResult b = ode.integrate(decay, x0, grid, g2);
    require(torch::equal(a.x, b.x), "integrate() is not a pure function of its inputs and generator");
    require(a.intermediates.size() == static_cast<size_t>(grid.size(0)), "intermediates do not match the grid");
    require(a.nfe > 0, "integrate() reports no evaluations");
    // Accuracy on the drift alone for deterministic integrators (a stochastic one, whose
    // result changes with the generator's seed, is checked by its plugin's tests).
    auto g3 = gen_of(8);
    const bool deterministic = torch::equal(ode.integrate(decay, x0, grid, g3).x, a.x);
    if (deterministic)
      require(max_abs(a.x, torch::full_like(x0, std::exp(-1.0))) < 0.05, "integrate() misses exp(-1) on dx/dt = -x/span by more than 0.05");
  } else if (name == "persistent_state") {
    // What a checkpoint saves must restore to itself, and leave the component's data as it was.
    auto& st = *capability<PersistentState>(c);
    const io::TensorDict saved = st.persistent_state();
    require(!saved.empty(), "persistent_state() is empty");
    Domain* domain = dynamic_cast<Domain*>(&c);
    auto g1 = gen_of(6), g2 = gen_of(6);
    torch::Tensor before = domain ? domain->reference(8, g1).at("x") : torch::Tensor();
    st.restore_state(saved);
    const io::TensorDict again = st.persistent_state();
    require(again.size() == saved.size(), "restore_state(persistent_state()) changes the number of entries");
    for (size_t i = 0; i < saved.size(); ++i)
      require(again[i].first == saved[i].first && torch::equal(again[i].second, saved[i].second),
              "restore_state(persistent_state()) changes '" + saved[i].first + "'");
    if (domain) require(torch::equal(domain->reference(8, g2).at("x"), before), "restoring its own state changes reference()");
    // A different state (every floating entry moved) is either refused or taken as it is.
    io::TensorDict moved = saved;
    for (auto& [name, t] : moved)
      if (t.is_floating_point()) t = t + 1;
    bool taken = true;
    try {
      st.restore_state(moved);
    } catch (const Error&) {
      taken = false;
    }
    if (taken) {
      const io::TensorDict now = st.persistent_state();
      for (size_t i = 0; i < moved.size(); ++i)
        require(i < now.size() && torch::equal(now[i].second, moved[i].second),
                "restore_state() accepts a changed '" + moved[i].first + "' but persistent_state() does not return it");
    }
    st.restore_state(saved);
    io::TensorDict empty;
    bool refused = false;
    try {
      st.restore_state(empty);
    } catch (const Error&) {
      refused = true;
    }
    require(refused, "restore_state() accepts an empty state without a flowkit::Error");
  } else if (name == "velocity_conversions") {
    // With data a single point x1, the marginal velocity is the conditional one, so the data
    // estimate from (dxt, xt, t) must be x1 exactly.
    const auto& conv = *capability<VelocityConversions>(c);
    const auto& path = dynamic_cast<const Path&>(c);
    auto g = gen_of(4);
    auto x0 = path.prior(5, {3}, g, opts);
    auto x1 = torch::randn({1, 3}, opts).expand({5, 3});
    auto t = torch::linspace(0.2, 0.8, 5, opts);
    PathSample s = path.sample(x0, x1, t);
    require(max_abs(conv.velocity_to_data(s.dxt, s.xt, t), x1) < 1e-6, "velocity_to_data of a point mass is not the point");
    require(torch::isfinite(conv.velocity_to_score(s.dxt, s.xt, t)).all().item<bool>(), "velocity_to_score is not finite");
  } else if (name == "prior_density") {
    // In one dimension: the density integrates to 1 and has the mean and variance of the
    // prior's own draws (the density and the sampler describe the same distribution).
    const auto& density = *capability<PriorDensity>(c);
    const auto& path = dynamic_cast<const Path&>(c);
    auto g = gen_of(5);
    torch::Tensor draws = path.prior(20000, {1}, g, opts).reshape({-1});
    const double reach = 1.5 * draws.abs().max().item<double>();
    torch::Tensor xs = torch::linspace(-reach, reach, 20001, opts);
    torch::Tensor lp = density.prior_log_density(xs.unsqueeze(1));
    require(lp.sizes().equals({xs.size(0)}), "prior_log_density is not one number per item");
    torch::Tensor p = lp.exp();
    const double dx = 2 * reach / 20000, mass = (p.sum().item<double>() - 0.5 * (p[0] + p[-1]).item<double>()) * dx;
    require(std::abs(mass - 1) < 0.02, "prior_log_density does not integrate to 1 (" + std::to_string(mass) + ")");
    const double mean = (xs * p).sum().item<double>() * dx, var = ((xs - mean).pow(2) * p).sum().item<double>() * dx;
    const double sd = draws.std().item<double>();
    require(std::abs(mean - draws.mean().item<double>()) < 0.05 * sd && std::abs(var / (sd * sd) - 1) < 0.05,
            "prior_log_density's mean/variance differ from the prior's draws");
  } else if (name == "noise_kernel") {
    const auto& k = *capability<NoiseKernel>(c);
    auto g = gen_of(6);
    NoiseDraw d = k.training_noise(torch::full({4}, 0.5, opts), {3}, g, torch::TensorOptions().dtype(torch::kFloat32));
    require(d.noise.sizes().equals({4, 3}) && torch::isfinite(d.noise).all().item<bool>(), "training_noise has the wrong shape or is not finite");
  } else if (name == "invertible") {
    if (!ctx.domain || ctx.domain->item_shape().empty()) return;
    auto& flow = *capability<InvertibleModel>(c);
    auto g = gen_of(8);
    auto [x, cond] = data(*ctx.domain, 4, g);
    torch::NoGradGuard no_grad;
    LatentAndLogDet f = flow.to_latent(x, cond);
    require(f.log_det.sizes().equals({x.size(0)}), "log_det is not one number per item");
    require(max_abs(flow.from_latent(f.z, cond), x) < 1e-4, "from_latent(to_latent(x)) is not x");
    require(torch::isfinite(flow.log_likelihood(x, cond)).all().item<bool>(), "log_likelihood is not finite");
  } else if (name == "representations") {
    if (!ctx.domain || ctx.domain->item_shape().empty()) return;
    auto& rep = *capability<RepresentationModel>(c);
    auto g = gen_of(8);
    auto [x, cond] = data(*ctx.domain, 4, g);
    auto t = torch::rand({4});
    torch::NoGradGuard no_grad;
    auto [out, reps] = rep.forward_with_representations(x, t, cond);
    require(max_abs(out, dynamic_cast<Model&>(c).forward(x, t, cond)) < 1e-5, "its output differs from forward()");
    for (const auto& [n, z] : reps) require(z.dim() >= 1 && z.size(0) == 4, "representation " + n + " has no batch dimension");
  } else if (name == "named_outputs") {
    require(!capability<NamedOutputModel>(c)->output_names().empty(), "output_names() is empty");
  } else if (name == "environment") {
    // A do-nothing policy (zero action chunks of the domain's item shape) rolled out once:
    // every metric the domain names comes back, finite, and the policy saw observations.
    const auto& env = *capability<Environment>(c);
    auto& d = dynamic_cast<Domain&>(c);
    const auto shape = d.item_shape();
    int64_t calls = 0;
    Policy zero = [&](const Conditioning& obs, torch::Generator&) {
      ++calls;
      std::vector<int64_t> rows{obs.empty() ? 1 : obs.begin()->second.size(0)};
      rows.insert(rows.end(), shape.begin(), shape.end());
      return torch::zeros(rows);
    };
    auto g = gen_of(12);
    const auto metrics = d.metric_names();
    nlohmann::json result = env.rollout(zero, metrics, g);
    require(calls > 0, "rollout() never called the policy");
    for (const auto& m : metrics) {
      require(result.contains(m), "rollout() omits metric " + m);
      if (result.at(m).is_number()) require(std::isfinite(result.at(m).get<double>()), "metric " + m + " is not finite");
    }
  }
}

}  // namespace flowkit::core::contracts
