// The conformance suite (flowkit/core/conformance.h): each check is a small function that
// throws a flowkit::Error with the reason when the contract does not hold.
#include "flowkit/core/conformance.h"

#include <torch/torch.h>

#include <filesystem>
#include <set>

#include "flowkit/core/pipeline.h"
#include "flowkit/flowkit.h"

namespace fs = std::filesystem;

namespace flowkit::core {
namespace {

void require(bool ok, const std::string& why) {
  if (!ok) throw Error(why);
}
double max_abs(const torch::Tensor& a, const torch::Tensor& b) { return (a - b).abs().max().item<double>(); }
torch::Generator gen_of(uint64_t seed) { return at::detail::createCPUGenerator(seed); }

class Suite {
 public:
  Suite(PluginHost& host, ConformanceReport& report) : host_(host), report_(report) {}

  // Runs `fn`, recording a pass or the reason of the failure.
  template <class F>
  bool check(const std::string& component, const std::string& name, F&& fn) {
    ConformanceCheck c{component, name, false, ""};
    try {
      fn();
      c.passed = true;
    } catch (const std::exception& e) {
      c.detail = e.what();
    }
    report_.checks.push_back(c);
    return c.passed;
  }

  Config defaults(const ComponentSpec& spec) {
    std::vector<Problem> problems;
    auto resolved = check_params(spec.params, {{"type", spec.type()}}, "conformance.json", "/" + spec.name, problems,
                                 {"type"}, &host_);
    if (!problems.empty()) throw Error("its manifest defaults do not validate: " + problems.front().str());
    return Config(resolved, "conformance.json", "/" + spec.name);
  }

  // The plugin's own first component of `kind`, else the first one on the search path.
  const ComponentSpec* pick(Kind kind, const std::string& plugin) {
    const ComponentSpec* any = nullptr;
    for (const auto& m : host_.plugins())
      for (const auto& c : m.components)
        if (c.kind == kind) {
          if (m.name == plugin) return &c;
          if (!any) any = &c;
        }
    return any;
  }

  void run_plugin(const PluginManifest& m) {
    auto ok = host_.load(m.name);
    if (!check(m.name, "loads", [&] { require(bool(ok), ok ? "" : ok.error()); })) return;
    // The context: domain, path, model in kinds() order, as a pipeline would build them.
    BuildContext ctx;
    ctx.build = [this, &ctx](Kind k, const Config& c) { return host_.create(k, c, ctx); };
    std::vector<std::unique_ptr<Component>> base;
    for (Kind k : {Kind::domain, Kind::path, Kind::model}) {
      const ComponentSpec* spec = pick(k, m.name);
      if (!spec) continue;
      try {
        base.push_back(host_.create(k, defaults(*spec), ctx));
      } catch (const std::exception& e) {
        // The plugin's own part must build; another plugin's stand-in is only a convenience.
        if (spec->plugin == m.name) {
          check(spec->type(), "builds as the context of " + m.name, [&] { throw Error(e.what()); });
          return;
        }
        continue;
      }
      if (k == Kind::domain) ctx.domain = dynamic_cast<Domain*>(base.back().get());
      if (k == Kind::path) ctx.path = dynamic_cast<Path*>(base.back().get());
      if (k == Kind::model) ctx.model = dynamic_cast<Model*>(base.back().get());
    }
    // Losses and samplers may pair with any of the plugin's own paths (or none).
    std::vector<std::unique_ptr<Component>> own_paths;
    paths_.clear();
    for (const auto& spec : m.components)
      if (spec.kind == Kind::path) {
        try {
          own_paths.push_back(host_.create(Kind::path, defaults(spec), ctx));
          paths_.push_back(dynamic_cast<Path*>(own_paths.back().get()));
        } catch (const std::exception&) {
        }
      }
    if (paths_.empty() && ctx.path) paths_.push_back(ctx.path);
    paths_.push_back(nullptr);  // components that need no path (likelihood models)
    for (const auto& spec : m.components) {
      if (spec.kind == Kind::loss || spec.kind == Kind::solver) run_paired(spec, ctx);
      else run_component(spec, ctx);
    }
  }

  // A loss or sampler: built and checked with each candidate path; one must work, and the
  // others must fail with a flowkit::Error (not a crash).
  void run_paired(const ComponentSpec& spec, BuildContext ctx) {
    std::string errors;
    for (const Path* path : paths_) {
      ctx.path = path;
      ConformanceReport trial;
      Suite sub(host_, trial);
      sub.paths_ = paths_;
      sub.run_component(spec, ctx);
      if (trial.failures() == 0) {
        report_.checks.insert(report_.checks.end(), trial.checks.begin(), trial.checks.end());
        return;
      }
      for (const auto& c : trial.checks)
        if (!c.passed) errors += " [" + c.check + ": " + c.detail + "]";
    }
    check(spec.type(), "works with one of its plugin's paths", [&] { throw Error("with every path:" + errors); });
  }

  void run_component(const ComponentSpec& spec, const BuildContext& ctx) {
    const std::string who = spec.type();
    std::unique_ptr<Component> c;
    Config cfg;
    if (!check(who, "builds from its manifest defaults", [&] {
          cfg = defaults(spec);
          c = host_.create(spec.kind, cfg, ctx);
        }))
      return;
    check(who, "reads exactly the parameters its manifest declares", [&] {
      std::set<std::string> declared, read = cfg.keys_read();
      for (const auto& p : spec.params) declared.insert(p.name);
      read.erase("type");
      std::string missing, extra;
      for (const auto& d : declared)
        if (!read.count(d)) missing += " " + d;
      for (const auto& r : read)
        if (!declared.count(r)) extra += " " + r;
      require(missing.empty() && extra.empty(),
              (missing.empty() ? "" : "declared but never read:" + missing + ". ") + (extra.empty() ? "" : "read but not declared:" + extra));
    });
    switch (spec.kind) {
      case Kind::domain: check(who, "domain contract", [&] { domain_contract(dynamic_cast<Domain&>(*c)); }); break;
      case Kind::path: check(who, "path contract", [&] { path_contract(dynamic_cast<Path&>(*c)); }); break;
      case Kind::model: check(who, "model contract", [&] { model_contract(dynamic_cast<Model&>(*c), ctx); }); break;
      case Kind::loss: check(who, "loss contract", [&] { loss_contract(dynamic_cast<Loss&>(*c), ctx); }); break;
      case Kind::solver: check(who, "solver contract", [&] { solver_contract(dynamic_cast<Solver&>(*c), ctx); }); break;
    }
    for (const auto& name : capability_names(*c))
      check(who, "capability " + name, [&] { capability_contract(name, *c, ctx); });
  }

 private:
  static std::pair<torch::Tensor, Conditioning> data(Domain& d, int64_t n, torch::Generator& g) {
    Batch b = d.train_batch(n, g);
    Conditioning cond;
    for (const auto& name : b.names())
      if (name != "x") cond.set(name, b.at(name));
    return {b.at("x"), cond};
  }

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
    if (capability<Environment>(d)) return;  // evaluated by rollouts, checked by the plugin's tests
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
    SolveResult a = s.sample(*ctx.model, ctx.path, req, g);
    SolveResult b = s.sample(*ctx.model, ctx.path, req, g2);
    require(a.x.size(0) == 8, "sample() returns the wrong number of samples");
    require(torch::isfinite(a.x).all().item<bool>(), "samples are not finite");
    require(torch::equal(a.x, b.x), "sample() is not a pure function of its inputs and generator");
    for (const auto& [name, value] : a.fields)
      if (value.is_floating_point()) require(torch::isfinite(value).all().item<bool>(), "field " + name + " is not finite");
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
    }
    // "environment": rolled out by the plugin's own tests (episodes are costly).
  }

  PluginHost& host_;
  ConformanceReport& report_;
  std::vector<const Path*> paths_;
};

}  // namespace

int ConformanceReport::failures() const {
  int n = 0;
  for (const auto& c : checks) n += !c.passed;
  return n;
}

std::string ConformanceReport::text() const {
  std::string out;
  for (const auto& c : checks)
    out += std::string(c.passed ? "PASS " : "FAIL ") + c.component + ": " + c.check + (c.detail.empty() ? "" : " — " + c.detail) + "\n";
  return out;
}

ConformanceReport run_conformance(PluginHost& host, const std::vector<std::string>& plugins) {
  ConformanceReport report;
  Suite suite(host, report);
  for (const auto& name : plugins)
    if (std::none_of(host.plugins().begin(), host.plugins().end(), [&](const PluginManifest& m) { return m.name == name; }))
      suite.check(name, "is found on the plugin path", [&] { throw Error("no plugin named '" + name + "'" + did_you_mean(name, [&] {
                                                                 std::vector<std::string> n;
                                                                 for (const auto& m : host.plugins()) n.push_back(m.name);
                                                                 return n;
                                                               }())); });
  for (const auto& m : host.plugins())
    if (plugins.empty() || std::find(plugins.begin(), plugins.end(), m.name) != plugins.end()) suite.run_plugin(m);
  return report;
}

}  // namespace flowkit::core
