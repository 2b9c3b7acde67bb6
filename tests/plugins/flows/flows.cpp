// Test plugin for SDK 3.0's likelihood path: an affine-coupling normalizing flow with no
// probability path, trained by exact likelihood, sampled through its inverse. Two small paths,
// a velocity loss that needs a path and a one-step sampler that needs the linear one give the
// host's validation tests their "needs" cases without a bundled plugin.
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
  std::vector<std::string> metric_names() const override { return {"entropy_bits_per_dim", "correlation", "mean_x", "mean_y"}; }
  nlohmann::json evaluate(const Batch& generated, const Batch&, const std::vector<std::string>& metrics,
                          torch::Generator&) const override {
    nlohmann::json out;
    auto x = generated.at("x").to(torch::kDouble);
    for (const auto& m : metrics) {
      // The data's differential entropy per dimension in bits: the floor of any model's NLL.
      if (m == "entropy_bits_per_dim") out[m] = (std::log(2 * M_PI * M_E) + 0.5 * std::log(1 - rho_ * rho_)) / (2 * std::log(2.0));
      if (m == "correlation") out[m] = torch::corrcoef(x.t())[0][1].item<double>();
      if (m == "mean_x") out[m] = x.select(1, 0).mean().item<double>();
      if (m == "mean_y") out[m] = x.select(1, 1).mean().item<double>();
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
  CouplingNet(int64_t layers, int64_t hidden, const std::string& activation) {
    for (int64_t i = 0; i < layers; ++i) {
      torch::nn::Sequential net(torch::nn::Linear(1, hidden));
      if (activation == "silu") net->push_back(torch::nn::SiLU());
      else if (activation == "relu") net->push_back(torch::nn::ReLU());
      else net->push_back(torch::nn::Tanh());  // the manifest allows only these three
      net->push_back(torch::nn::Linear(hidden, 2));
      nets.push_back(register_module("c" + std::to_string(i), net));
    }
  }
  std::vector<torch::nn::Sequential> nets;
};

// Layer i keeps coordinate i % 2 and transforms the other: y = x e^s(k) + b(k).
class Coupling final : public flowkit::Model, public flowkit::InvertibleModel {
 public:
  Coupling(int64_t layers, int64_t hidden, const std::string& activation)
      : net_(std::make_shared<CouplingNet>(layers, hidden, activation)) {}
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

// t of shape [B] broadcast against x of shape [B, ...].
torch::Tensor per_item(const torch::Tensor& t, const torch::Tensor& x) {
  std::vector<int64_t> shape(x.dim(), 1);
  shape[0] = t.size(0);
  return t.to(x.options()).view(shape);
}

// x_t = (1 - t) x0 + t x1 from a standard normal prior.
class LinearPath final : public flowkit::Path {
 public:
  flowkit::PathSample sample(const torch::Tensor& x0, const torch::Tensor& x1, const torch::Tensor& t) const override {
    auto tt = per_item(t, x0);
    return {t, x0, x1, (1 - tt) * x0 + tt * x1, x1 - x0, {}};
  }
  torch::Tensor prior(int64_t n, const std::vector<int64_t>& item_shape, torch::Generator& gen,
                      const torch::TensorOptions& options) const override {
    std::vector<int64_t> shape{n};
    shape.insert(shape.end(), item_shape.begin(), item_shape.end());
    return flowkit::random::randn(shape, gen, options);
  }
};

// x_t = cos(pi t / 2) x0 + sin(pi t / 2) x1 from a standard normal prior.
class TrigPath final : public flowkit::Path {
 public:
  flowkit::PathSample sample(const torch::Tensor& x0, const torch::Tensor& x1, const torch::Tensor& t) const override {
    auto a = per_item(t, x0) * (M_PI / 2);
    return {t, x0, x1, torch::cos(a) * x0 + torch::sin(a) * x1, (M_PI / 2) * (torch::cos(a) * x1 - torch::sin(a) * x0), {}};
  }
  torch::Tensor prior(int64_t n, const std::vector<int64_t>& item_shape, torch::Generator& gen,
                      const torch::TensorOptions& options) const override {
    std::vector<int64_t> shape{n};
    shape.insert(shape.end(), item_shape.begin(), item_shape.end());
    return flowkit::random::randn(shape, gen, options);
  }
};

// Regresses the model onto the path's conditional velocity at a uniform time.
class VelocityMse final : public flowkit::Loss {
 public:
  flowkit::LossOutput compute(flowkit::Model& model, const flowkit::Path* path, const Batch& batch, torch::Generator& gen) override {
    if (!path) throw flowkit::Error("fk_flows.velocity_mse needs a path");
    const torch::Tensor& x1 = batch.at("x");
    std::vector<int64_t> shape(x1.sizes().begin(), x1.sizes().end());
    torch::Tensor x0 = path->prior(x1.size(0), {shape.begin() + 1, shape.end()}, gen, x1.options());
    torch::Tensor t = flowkit::random::rand({x1.size(0)}, gen, x1.options());
    flowkit::PathSample s = path->sample(x0, x1, t);
    flowkit::LossOutput out;
    out.loss = (model.forward(s.xt, t, {}) - s.dxt).pow(2).mean();
    return out;
  }
};

// One Euler step from t = 0 to 1: x1 = x0 + v(x0, 0), exact only on the straight (linear) path.
class OneStep final : public flowkit::Solver {
 public:
  flowkit::SolveResult sample(flowkit::Model& model, const flowkit::Path* path, const flowkit::SampleRequest& req,
                              torch::Generator& gen) const override {
    if (!path) throw flowkit::Error("fk_flows.one_step needs a path");
    torch::NoGradGuard no_grad;
    torch::Tensor x0 = path->prior(req.n, req.item_shape, gen, req.options);
    flowkit::SolveResult r;
    r.x = x0 + model.forward(x0, torch::zeros({req.n}, req.options), req.cond);
    r.nfe = 1;
    return r;
  }
};

std::unique_ptr<flowkit::Component> make_gauss2d(const flowkit::Config& cfg, const flowkit::BuildContext&) {
  return std::make_unique<Gauss2d>(cfg.get<double>("rho"));
}
std::unique_ptr<flowkit::Component> make_coupling(const flowkit::Config& cfg, const flowkit::BuildContext& ctx) {
  auto m = std::make_unique<Coupling>(cfg.get<int64_t>("layers"), cfg.get<int64_t>("hidden"), cfg.get<std::string>("activation"));
  m->module().to(torch::Device(ctx.device));
  return m;
}
std::unique_ptr<flowkit::Component> make_nll(const flowkit::Config&, const flowkit::BuildContext&) { return std::make_unique<Nll>(); }
std::unique_ptr<flowkit::Component> make_latent_sampler(const flowkit::Config& cfg, const flowkit::BuildContext&) {
  return std::make_unique<LatentSampler>(cfg.get<double>("temperature"));
}
std::unique_ptr<flowkit::Component> make_linear(const flowkit::Config&, const flowkit::BuildContext&) {
  return std::make_unique<LinearPath>();
}
std::unique_ptr<flowkit::Component> make_trig(const flowkit::Config&, const flowkit::BuildContext&) { return std::make_unique<TrigPath>(); }
std::unique_ptr<flowkit::Component> make_velocity_mse(const flowkit::Config&, const flowkit::BuildContext&) {
  return std::make_unique<VelocityMse>();
}
std::unique_ptr<flowkit::Component> make_one_step(const flowkit::Config&, const flowkit::BuildContext&) { return std::make_unique<OneStep>(); }
void register_all(flowkit::Registry& r) {
  r.add(flowkit::Kind::domain, "gauss2d", make_gauss2d);
  r.add(flowkit::Kind::model, "coupling", make_coupling);
  r.add(flowkit::Kind::loss, "nll", make_nll);
  r.add(flowkit::Kind::solver, "latent_sampler", make_latent_sampler);
  r.add(flowkit::Kind::path, "linear", make_linear);
  r.add(flowkit::Kind::path, "trig", make_trig);
  r.add(flowkit::Kind::loss, "velocity_mse", make_velocity_mse);
  r.add(flowkit::Kind::solver, "one_step", make_one_step);
}

}  // namespace

FLOWKIT_PLUGIN("fk_flows", "1.0.0", register_all)
