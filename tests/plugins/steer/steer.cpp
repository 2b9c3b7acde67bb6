// Test plugin: a wrapper around any other plugin's model (fk_flows' flow in the tests). It
// steers the inner model's output by an offset and passes the inner model's capabilities on,
// so likelihood losses, samplers and eval find them through it without knowing its class.
#include <flowkit/flowkit.h>
#include <torch/torch.h>

namespace {

using flowkit::Conditioning;

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

std::unique_ptr<flowkit::Component> make_steered(const flowkit::Config& cfg, const flowkit::BuildContext& ctx) {
  const double offset = cfg.get<double>("offset");
  std::unique_ptr<flowkit::Component> c = ctx.build(flowkit::Kind::model, cfg.child("net"));
  auto* m = dynamic_cast<flowkit::Model*>(c.get());
  if (!m) cfg.fail("net", "the inner component is not a model");
  c.release();
  return std::make_unique<Steered>(std::unique_ptr<flowkit::Model>(m), offset);
}

void register_all(flowkit::Registry& r) { r.add(flowkit::Kind::model, "steered", make_steered); }

}  // namespace

FLOWKIT_PLUGIN("fk_steer", "1.0.0", register_all)
