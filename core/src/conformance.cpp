// The conformance suite (flowkit/core/conformance.h): each check is a small function that
// throws a flowkit::Error with the reason when the contract does not hold.
#include "flowkit/core/conformance.h"

#include "conformance_contracts.h"

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

  // The manifest's defaults, with the component's "example" parameters where it has some.
  Config defaults(const ComponentSpec& spec) {
    std::vector<Problem> problems;
    nlohmann::json params = spec.example;
    params["type"] = spec.type();
    const std::string file = spec.manifest_file.empty() ? "conformance.json" : spec.manifest_file;
    auto resolved = check_params(spec.params, params, file, "/" + spec.name, problems, {"type"}, &host_);
    if (!problems.empty()) throw Error("its manifest defaults do not validate: " + problems.front().str());
    return Config(resolved, file, "/" + spec.name);
  }

  // The plugin's own first component of `kind`, else every other plugin's, in search order.
  std::vector<const ComponentSpec*> candidates(Kind kind, const std::string& plugin) {
    std::vector<const ComponentSpec*> own, others;
    for (const auto& m : host_.plugins())
      for (const auto& c : m.components)
        if (c.kind == kind) (m.name == plugin ? own : others).push_back(&c);
    if (!own.empty()) return {own.front()};
    return others;
  }

  // Whether a stand-in from another plugin works in this context (a crystal network does
  // not take 2-D points): it must pass its own kind's contract here.
  static bool works_here(Kind kind, Component& c, const BuildContext& ctx) {
    try {
      if (kind == Kind::domain) contracts::domain_contract(dynamic_cast<Domain&>(c));
      if (kind == Kind::path) contracts::path_contract(dynamic_cast<Path&>(c));
      if (kind == Kind::model) contracts::model_contract(dynamic_cast<Model&>(c), ctx);
      return true;
    } catch (const std::exception&) {
      return false;
    }
  }

  void run_plugin(const PluginManifest& m) {
    auto ok = host_.load(m.name);
    if (!check(m.name, "loads", [&] { require(bool(ok), ok ? "" : ok.error()); })) return;
    // The context: domain, path, model in kinds() order, as a pipeline would build them.
    BuildContext ctx;
    ctx.build = [this, &ctx](Kind k, const Config& c) { return host_.create(k, c, ctx); };
    std::vector<std::unique_ptr<Component>> base;
    for (Kind k : {Kind::domain, Kind::path, Kind::model}) {
      bool built = false;
      for (const ComponentSpec* spec : candidates(k, m.name)) {
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
        if (spec->plugin != m.name && !works_here(k, *base.back(), ctx)) {
          base.pop_back();
          continue;
        }
        built = true;
        break;
      }
      if (!built) continue;
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
      else if (spec.kind == Kind::guidance || spec.kind == Kind::model) run_with_one_of_the_domains(m, spec, ctx);
      else run_component(spec, ctx);
    }
  }

  // A guidance may need more of the data than the first domain has (classifier-free guidance
  // needs labels), a model other items (a U-Net images): it must work with one of its
  // plugin's domains (and, for a guidance, a model built for it).
  void run_with_one_of_the_domains(const PluginManifest& m, const ComponentSpec& spec, const BuildContext& base) {
    std::string errors;
    auto attempt = [&](const BuildContext& ctx) {
      ConformanceReport trial;
      Suite sub(host_, trial);
      sub.run_component(spec, ctx);
      if (trial.failures() == 0) report_.checks.insert(report_.checks.end(), trial.checks.begin(), trial.checks.end());
      else
        for (const auto& c : trial.checks)
          if (!c.passed) errors += " [" + c.check + ": " + c.detail + "]";
      return trial.failures() == 0;
    };
    if (attempt(base)) return;
    for (const auto& d : m.components) {
      if (d.kind != Kind::domain) continue;
      BuildContext ctx = base;
      std::unique_ptr<Component> domain, model;
      try {
        domain = host_.create(Kind::domain, defaults(d), ctx);
        ctx.domain = dynamic_cast<Domain*>(domain.get());
        for (const ComponentSpec* ms : candidates(Kind::model, m.name)) {
          try {
            model = host_.create(Kind::model, defaults(*ms), ctx);
            if (works_here(Kind::model, *model, ctx)) break;
          } catch (const std::exception&) {
          }
          model.reset();
        }
      } catch (const std::exception&) {
        continue;
      }
      if (!model) continue;
      ctx.model = dynamic_cast<Model*>(model.get());
      if (attempt(ctx)) return;
    }
    check(spec.type(), "works with one of its plugin's domains", [&] { throw Error("with every domain:" + errors); });
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
      case Kind::domain: check(who, "domain contract", [&] { contracts::domain_contract(dynamic_cast<Domain&>(*c)); }); break;
      case Kind::path: check(who, "path contract", [&] { contracts::path_contract(dynamic_cast<Path&>(*c)); }); break;
      case Kind::model: check(who, "model contract", [&] { contracts::model_contract(dynamic_cast<Model&>(*c), ctx); }); break;
      case Kind::loss: check(who, "loss contract", [&] { contracts::loss_contract(dynamic_cast<Loss&>(*c), ctx); }); break;
      case Kind::solver: check(who, "solver contract", [&] { contracts::solver_contract(dynamic_cast<Solver&>(*c), ctx); }); break;
      case Kind::guidance: check(who, "guidance contract", [&] { contracts::guidance_contract(dynamic_cast<Guidance&>(*c), ctx); }); break;
    }
    for (const auto& name : capability_names(*c))
      check(who, "capability " + name, [&] { contracts::capability_contract(name, *c, ctx); });
  }

 private:
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
