// Factories (parameter reading and cross-parameter checks) and registration.
#include <torch/torch.h>

#include <cmath>

#include "flowkit/domain.h"
#include "flowkit/error.h"
#include "pfgmpp/pfgmpp.h"

namespace pfgmpp {

double number_or_inf(const flowkit::Config& cfg, const std::string& key, double fallback, double min) {
  double v = fallback;
  if (cfg.has(key)) {
    const auto& j = cfg.json().at(key);
    if (j.is_string()) {
      std::string s = j.get<std::string>();
      if (s != "inf" && s != "infinity" && s != "+inf") cfg.fail(key, "expected a number or \"inf\", found \"" + s + "\"");
      v = kInf;
    } else if (j.is_number()) {
      v = j.get<double>();
    } else {
      cfg.fail(key, std::string("expected a number or \"inf\", found ") + j.type_name());
    }
  }
  if (!(v >= min)) cfg.fail(key, "value " + std::to_string(v) + " is below the minimum " + std::to_string(min));
  return v;
}

namespace {
void check_sigmas(const flowkit::Config& cfg, double smin, double smax) {
  if (!(smin < smax)) cfg.fail("sigma_min", "sigma_min (" + std::to_string(smin) + ") must be below sigma_max (" +
                                                std::to_string(smax) + ")");
}
const flowkit::Domain& need_domain(const flowkit::Config& cfg, const flowkit::BuildContext& ctx, const char* who) {
  if (!ctx.domain) cfg.fail("type", std::string(who) + " needs a domain in the pipeline (it reads the data shape)");
  return *ctx.domain;
}
}  // namespace

std::unique_ptr<flowkit::Component> make_kernel(const flowkit::Config& cfg, const flowkit::BuildContext&) {
  KernelOptions o;
  o.D = number_or_inf(cfg, "D", 128.0, 1.0);
  o.sigma_min = cfg.get<double>("sigma_min", 0.002, flowkit::Range::positive());
  o.sigma_max = cfg.get<double>("sigma_max", 80.0, flowkit::Range::positive());
  o.beta_clip = cfg.get<double>("beta_clip", 1e-3, {0.0, 0.49});
  o.clip_lower = cfg.get<bool>("clip_lower", true);
  check_sigmas(cfg, o.sigma_min, o.sigma_max);
  return std::make_unique<KernelPath>(o);
}

std::unique_ptr<flowkit::Component> make_edm(const flowkit::Config& cfg, const flowkit::BuildContext& ctx) {
  const double sd = cfg.get<double>("sigma_data", 0.5, flowkit::Range::positive());
  flowkit::Config net = cfg.has("net") ? cfg.child("net")
                                       : flowkit::Config(nlohmann::json{{"type", "standard.mlp"}}, cfg.file(),
                                                         cfg.pointer_to("net"));
  if (!ctx.build) cfg.fail("net", "the host gave no way to build the inner model");
  std::unique_ptr<flowkit::Component> c = ctx.build(flowkit::Kind::model, net);
  auto* m = dynamic_cast<flowkit::Model*>(c.get());
  if (!m) cfg.fail("net", "the inner component is not a model");
  c.release();
  return std::make_unique<EdmModel>(std::unique_ptr<flowkit::Model>(m), sd);
}

std::unique_ptr<flowkit::Component> make_resmlp(const flowkit::Config& cfg, const flowkit::BuildContext& ctx) {
  const flowkit::Domain& domain = need_domain(cfg, ctx, "pfgmpp.resmlp");
  ResMLPOptions o;
  o.hidden = cfg.get<int64_t>("hidden", 256, flowkit::Range::at_least(1));
  o.blocks = cfg.get<int64_t>("blocks", 4, flowkit::Range::at_least(1));
  o.embedding_dim = cfg.get<int64_t>("embedding_dim", 64, flowkit::Range::at_least(2));
  o.class_conditional = cfg.get<bool>("class_conditional", false);
  std::vector<int64_t> item = domain.item_shape();
  if (item.empty()) cfg.fail("type", "pfgmpp.resmlp needs a domain with a fixed item shape");
  o.in_dim = 1;
  for (int64_t s : item) o.in_dim *= s;
  o.num_classes = domain.num_classes();
  if (o.class_conditional && o.num_classes <= 0) cfg.fail("class_conditional", "the domain has no classes");
  auto m = std::make_unique<ResMLPModel>(o, item);
  m->module().to(torch::Device(ctx.device));
  return m;
}

std::unique_ptr<flowkit::Component> make_exact_denoiser(const flowkit::Config& cfg, const flowkit::BuildContext& ctx) {
  const double D = number_or_inf(cfg, "D", 128.0, 1.0);
  const int64_t points = cfg.get<int64_t>("points", 64, flowkit::Range::at_least(1));
  const int64_t seed = cfg.get<int64_t>("seed", 0, flowkit::Range::at_least(0));
  if (!ctx.domain) cfg.fail("type", "pfgmpp.exact_denoiser needs a domain in the pipeline (its training points)");
  auto gen = at::detail::createCPUGenerator(static_cast<uint64_t>(seed));
  torch::Tensor data = const_cast<flowkit::Domain*>(ctx.domain)->train_batch(points, gen).at("x");
  return std::make_unique<ExactDenoiser>(data.to(torch::Device(ctx.device)), D);
}

std::unique_ptr<flowkit::Component> make_edm_loss(const flowkit::Config& cfg, const flowkit::BuildContext&) {
  LossOptions o;
  o.p_mean = cfg.get<double>("P_mean", -1.2);
  o.p_std = cfg.get<double>("P_std", 1.2, flowkit::Range::positive());
  o.sigma_data = cfg.get<double>("sigma_data", 0.5, flowkit::Range::positive());
  return std::make_unique<EdmLoss>(o);
}

std::unique_ptr<flowkit::Component> make_heun(const flowkit::Config& cfg, const flowkit::BuildContext&) {
  HeunOptions o;
  o.steps = cfg.get<int64_t>("steps", 18, flowkit::Range::at_least(1));
  o.sigma_min = cfg.get<double>("sigma_min", 0.002, flowkit::Range::positive());
  o.sigma_max = cfg.get<double>("sigma_max", 80.0, flowkit::Range::positive());
  o.rho = cfg.get<double>("rho", 7.0, flowkit::Range::positive());
  o.alpha = cfg.get<double>("alpha", 0.0, flowkit::Range::at_least(0));
  o.bits = cfg.get<int64_t>("bits", 0, {0, 16});
  if (o.bits == 1) cfg.fail("bits", "1-bit quantization is not supported (use 0 = off, or 2..16)");
  check_sigmas(cfg, o.sigma_min, o.sigma_max);
  return std::make_unique<HeunSolver>(o);
}

void register_components(flowkit::Registry& r) {
  using flowkit::Kind;
  r.add(Kind::path, "kernel", &make_kernel);
  r.add(Kind::model, "edm", &make_edm);
  r.add(Kind::model, "resmlp", &make_resmlp);
  r.add(Kind::model, "exact_denoiser", &make_exact_denoiser);
  r.add(Kind::loss, "edm_loss", &make_edm_loss);
  r.add(Kind::solver, "heun", &make_heun);
}

}  // namespace pfgmpp
