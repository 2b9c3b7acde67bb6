// Test plugin for SDK 3.0's likelihood path: an affine-coupling normalizing flow with no
// probability path, trained by exact likelihood, sampled through its inverse; and a wrapper
// model that steers another plugin's model while passing its capabilities on.
#include <flowkit/flowkit.h>
#include <torch/torch.h>

#include <cmath>

namespace {

using flowkit::Batch;
using flowkit::Conditioning;

class Gauss2d final : public flowkit::Domain {
 public:
  explicit Gauss2d(double rho) : rho_(rho) {}
  std::vector<int64_t> item_shape() const override { return {2}; }
  Batch train_batch(int64_t n, torch::Generator& gen) override { return {{"x", draw(n, gen)}}; }
  Batch reference(int64_t n, torch::Generator&) override {
    auto g = at::detail::createCPUGenerator(12345);  // a fixed held-out set
    return {{"x", draw(n, g)}};
  }
  std::vector<std::string> metric_names() const override { return {"entropy_bits_per_dim", "correlation"}; }
  nlohmann::json evaluate(const Batch& generated, const Batch&, const std::vector<std::string>& metrics,
                          torch::Generator&) const override {
    nlohmann::json out;
    auto x = generated.at("x").to(torch::kDouble);
    for (const auto& m : metrics) {
      // The data's differential entropy per dimension in bits: the floor of any model's NLL.
      if (m == "entropy_bits_per_dim") out[m] = (std::log(2 * M_PI * M_E) + 0.5 * std::log(1 - rho_ * rho_)) / (2 * std::log(2.0));
      if (m == "correlation") out[m] = torch::corrcoef(x.t())[0][1].item<double>();
    }
    return out;
  }
  std::vector<std::string> write(const Batch&, const std::string&, const std::string&) const override { return {}; }

 private:
  torch::Tensor draw(int64_t n, torch::Generator& gen) const {
    auto z = flowkit::random::randn({n, 2}, gen);
    return torch::stack({z.select(1, 0), rho_ * z.select(1, 0) + std::sqrt(1 - rho_ * rho_) * z.select(1, 1)}, 1);
  }
  double rho_;
};

struct CouplingNet : torch::nn::Module {
  CouplingNet(int64_t layers, int64_t hidden) {
    for (int64_t i = 0; i < layers; ++i)
      nets.push_back(register_module("c" + std::to_string(i),
                                     torch::nn::Sequential(torch::nn::Linear(1, hidden), torch::nn::Tanh(), torch::nn::Linear(hidden, 2))));
  }
  std::vector<torch::nn::Sequential> nets;
};

// Layer i keeps coordinate i % 2 and transforms the other: y = x e^s(k) + b(k).
class Coupling final : public flowkit::Model, public flowkit::InvertibleModel {
 public:
  Coupling(int64_t layers, int64_t hidden) : net_(std::make_shared<CouplingNet>(layers, hidden)) {}
  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor&, const Conditioning& cond) override {
    return to_latent(x, cond).z;
  }
  torch::nn::Module& module() override { return *net_; }
  flowkit::LatentAndLogDet to_latent(const torch::Tensor& x, const Conditioning&) override {
    torch::Tensor h = x, log_det = torch::zeros({x.size(0)}, x.options());
    for (size_t i = 0; i < net_->nets.size(); ++i) {
      const int64_t keep = static_cast<int64_t>(i % 2), move = 1 - keep;
      auto [s, b] = scale_shift(i, h.select(1, keep).unsqueeze(1));
      torch::Tensor y = h.select(1, move) * torch::exp(s) + b;
      h = keep == 0 ? torch::stack({h.select(1, 0), y}, 1) : torch::stack({y, h.select(1, 1)}, 1);
      log_det = log_det + s;
    }
    return {h, log_det};
  }
  torch::Tensor from_latent(const torch::Tensor& z, const Conditioning&) override {
    torch::Tensor h = z;
    for (size_t j = net_->nets.size(); j-- > 0;) {
      const int64_t keep = static_cast<int64_t>(j % 2), move = 1 - keep;
      auto [s, b] = scale_shift(j, h.select(1, keep).unsqueeze(1));
      torch::Tensor x = (h.select(1, move) - b) * torch::exp(-s);
      h = keep == 0 ? torch::stack({h.select(1, 0), x}, 1) : torch::stack({x, h.select(1, 1)}, 1);
    }
    return h;
  }

 private:
  std::pair<torch::Tensor, torch::Tensor> scale_shift(size_t i, const torch::Tensor& k) {
    torch::Tensor o = net_->nets[i]->forward(k);
    return {torch::tanh(o.select(1, 0)), o.select(1, 1)};  // bounded log-scale: stable training
  }
  std::shared_ptr<CouplingNet> net_;
};

class Nll final : public flowkit::Loss {
 public:
  flowkit::LossOutput compute(flowkit::Model& model, const flowkit::Path*, const Batch& batch, torch::Generator&) override {
    auto& flow = flowkit::require_capability<flowkit::InvertibleModel>(model, "fk_flows.nll", "an invertible model");
    Conditioning cond;
    torch::Tensor ll = flow.log_likelihood(batch.at("x"), cond);
    flowkit::LossOutput out;
    out.loss = -ll.mean();
    out.logs["bits_per_dim"] = flowkit::bits_per_dim(ll.detach(), batch.at("x")[0].numel());
    return out;
  }
};

class LatentSampler final : public flowkit::Solver {
 public:
  explicit LatentSampler(double tau) : tau_(tau) {}
  flowkit::SolveResult sample(flowkit::Model& model, const flowkit::Path*, const flowkit::SampleRequest& req,
                              torch::Generator& gen) const override {
    auto& flow = flowkit::require_capability<flowkit::InvertibleModel>(model, "fk_flows.latent_sampler", "an invertible model");
    torch::NoGradGuard no_grad;
    std::vector<int64_t> shape{req.n};
    shape.insert(shape.end(), req.item_shape.begin(), req.item_shape.end());
    flowkit::SolveResult r;
    r.x = flow.from_latent(tau_ * flowkit::random::randn(shape, gen, req.options), req.cond);
    r.nfe = 1;
    return r;
  }

 private:
  double tau_;
};

// Steers any model by an offset on its output; its capabilities are the inner model's.
class Steered final : public flowkit::Model {
 public:
  Steered(std::unique_ptr<flowkit::Model> inner, double offset) : inner_(std::move(inner)), offset_(offset) {}
  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& t, const Conditioning& cond) override {
    return inner_->forward(x, t, cond) + offset_;
  }
  torch::nn::Module& module() override { return inner_->module(); }
  Component* capability_delegate() override { return inner_.get(); }

 private:
  std::unique_ptr<flowkit::Model> inner_;
  double offset_;
};

std::unique_ptr<flowkit::Component> make_gauss2d(const flowkit::Config& cfg, const flowkit::BuildContext&) {
  return std::make_unique<Gauss2d>(cfg.get<double>("rho"));
}
std::unique_ptr<flowkit::Component> make_coupling(const flowkit::Config& cfg, const flowkit::BuildContext& ctx) {
  auto m = std::make_unique<Coupling>(cfg.get<int64_t>("layers"), cfg.get<int64_t>("hidden"));
  m->module().to(torch::Device(ctx.device));
  return m;
}
std::unique_ptr<flowkit::Component> make_nll(const flowkit::Config&, const flowkit::BuildContext&) { return std::make_unique<Nll>(); }
std::unique_ptr<flowkit::Component> make_latent_sampler(const flowkit::Config& cfg, const flowkit::BuildContext&) {
  return std::make_unique<LatentSampler>(cfg.get<double>("temperature"));
}
std::unique_ptr<flowkit::Component> make_steered(const flowkit::Config& cfg, const flowkit::BuildContext& ctx) {
  const double offset = cfg.get<double>("offset");
  std::unique_ptr<flowkit::Component> c = ctx.build(flowkit::Kind::model, cfg.child("net"));
  auto* m = dynamic_cast<flowkit::Model*>(c.get());
  if (!m) cfg.fail("net", "the inner component is not a model");
  c.release();
  return std::make_unique<Steered>(std::unique_ptr<flowkit::Model>(m), offset);
}

void register_all(flowkit::Registry& r) {
  r.add(flowkit::Kind::domain, "gauss2d", make_gauss2d);
  r.add(flowkit::Kind::model, "coupling", make_coupling);
  r.add(flowkit::Kind::loss, "nll", make_nll);
  r.add(flowkit::Kind::solver, "latent_sampler", make_latent_sampler);
  r.add(flowkit::Kind::model, "steered", make_steered);
}

}  // namespace

FLOWKIT_PLUGIN("fk_flows", "1.0.0", register_all)
