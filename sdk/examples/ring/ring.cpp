// Example third-party plugin: a `domain` of points on a noisy circle. It is a complete
// plugin: component class, factory, registration function and the entry macro.
#include <flowkit/flowkit.h>
#include <flowkit/io.h>
#include <torch/torch.h>

#include <cmath>

namespace {

class Circle final : public flowkit::Domain {
 public:
  Circle(double radius, double noise) : radius_(radius), noise_(noise) {}

  std::vector<int64_t> item_shape() const override { return {2}; }

  flowkit::Batch train_batch(int64_t n, torch::Generator& gen) override { return {{"x", draw(n, gen)}}; }
  flowkit::Batch reference(int64_t n, torch::Generator& gen) override { return {{"x", draw(n, gen)}}; }

  std::vector<std::string> metric_names() const override { return {"radius_error", "radius_std"}; }

  nlohmann::json evaluate(const flowkit::Batch& generated, const flowkit::Batch&, const std::vector<std::string>& metrics,
                          torch::Generator&) const override {
    auto r = generated.at("x").to(torch::kFloat64).norm(2, 1);
    nlohmann::json out;
    for (const auto& m : metrics) {
      if (m == "radius_error") out[m] = std::abs(r.mean().item<double>() - radius_);
      if (m == "radius_std") out[m] = r.std().item<double>();
    }
    return out;
  }

  std::vector<std::string> write(const flowkit::Batch& samples, const std::string& dir, const std::string& stem) const override {
    auto x = samples.at("x").to(torch::kFloat32).contiguous();
    std::string file = dir + "/" + stem + ".npy";
    flowkit::io::write_npy(file, x.data_ptr<float>(), {x.size(0), x.size(1)});
    return {file};
  }

 private:
  torch::Tensor draw(int64_t n, torch::Generator& gen) const {
    auto angle = torch::rand({n}, gen) * (2 * M_PI);
    auto x = torch::stack({torch::cos(angle), torch::sin(angle)}, 1) * radius_;
    return x + noise_ * torch::randn({n, 2}, gen);
  }
  double radius_, noise_;
};

std::unique_ptr<flowkit::Component> make_circle(const flowkit::Config& cfg, const flowkit::BuildContext&) {
  // Defaults and ranges live in plugin.json; the host has checked and filled them in.
  return std::make_unique<Circle>(cfg.get<double>("radius"), cfg.get<double>("noise"));
}

void register_components(flowkit::Registry& registry) {
  registry.add(flowkit::Kind::domain, "circle", make_circle);
}

}  // namespace

FLOWKIT_PLUGIN("ring", "1.0.0", register_components)
