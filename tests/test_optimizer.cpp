// The flat-buffer AdamW the trainer uses against LibTorch's own AdamW: the same updates
// (operation for operation), the same clipping, frozen parameters left alone, gradients that
// autograd replaced still counted, and an exact resume from its saved state.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include "session/flat_adamw.h"

using flowkit::core::AdamWSettings;
using flowkit::core::FlatAdamW;

namespace {
struct Net : torch::nn::Module {
  Net() {
    a = register_module("a", torch::nn::Linear(3, 5));
    b = register_module("b", torch::nn::Linear(5, 2));
    frozen = register_parameter("frozen", torch::ones({4}), /*requires_grad=*/false);
  }
  torch::Tensor forward(const torch::Tensor& x) { return b->forward(torch::tanh(a->forward(x))) * frozen.sum(); }
  torch::nn::Linear a{nullptr}, b{nullptr};
  torch::Tensor frozen;
};

std::shared_ptr<Net> copy_of(Net& from) {
  auto to = std::make_shared<Net>();
  torch::NoGradGuard g;
  auto src = from.parameters(), dst = to->parameters();
  for (size_t i = 0; i < src.size(); ++i) dst[i].copy_(src[i]);
  return to;
}

torch::Tensor loss_of(Net& net, int step) {
  torch::manual_seed(100 + step);
  torch::Tensor x = torch::randn({16, 3});
  return net.forward(x).pow(2).mean() * 50;  // large enough for clipping to act
}

double max_difference(Net& a, Net& b) {
  double d = 0;
  auto pa = a.parameters(), pb = b.parameters();
  for (size_t i = 0; i < pa.size(); ++i) d = std::max(d, (pa[i] - pb[i]).abs().max().item<double>());
  return d;
}
}  // namespace

TEST(FlatAdamW, MatchesLibTorchAdamWWithClippingAndWeightDecay) {
  torch::manual_seed(0);
  auto reference = std::make_shared<Net>();
  auto flat_net = copy_of(*reference);
  AdamWSettings s;
  s.lr = 0.05, s.beta1 = 0.8, s.beta2 = 0.95, s.weight_decay = 0.1;
  torch::optim::AdamW torch_opt(reference->parameters(),
                                torch::optim::AdamWOptions(s.lr).betas({s.beta1, s.beta2}).weight_decay(s.weight_decay));
  FlatAdamW flat(flat_net->parameters(), s);
  EXPECT_FALSE(flat.all_parameters().defined()) << "a frozen parameter: not every parameter is in the buffer";
  int clipped = 0;
  for (int step = 0; step < 8; ++step) {
    const double lr = s.lr * (1.0 - step / 10.0);
    for (auto& g : torch_opt.param_groups()) static_cast<torch::optim::AdamWOptions&>(g.options()).lr(lr);
    flat.set_lr(lr);
    torch_opt.zero_grad();
    loss_of(*reference, step).backward();
    const double torch_norm = torch::nn::utils::clip_grad_norm_(reference->parameters(), 1.0);
    torch_opt.step();
    flat.zero_grad();
    loss_of(*flat_net, step).backward();
    const double flat_norm = flat.clip_grad_norm(1.0);
    flat.step();
    clipped += torch_norm > 1.0;
    EXPECT_NEAR(flat_norm, torch_norm, 1e-5 * torch_norm) << "step " << step;
    EXPECT_LT(max_difference(*reference, *flat_net), 1e-6) << "step " << step;
  }
  EXPECT_GT(clipped, 0) << "the test should exercise clipping";
  EXPECT_TRUE(torch::equal(flat_net->frozen, torch::ones({4}))) << "weight decay must not touch a frozen parameter";
}

TEST(FlatAdamW, GradientsReplacedByAutogradAreStillUsed) {
  torch::manual_seed(1);
  auto reference = std::make_shared<Net>();
  auto flat_net = copy_of(*reference);
  AdamWSettings s;
  torch::optim::AdamW torch_opt(reference->parameters(), torch::optim::AdamWOptions(s.lr).weight_decay(0));
  FlatAdamW flat(flat_net->parameters(), s);
  for (int step = 0; step < 3; ++step) {
    torch_opt.zero_grad();
    loss_of(*reference, step).backward();
    torch_opt.step();
    flat.zero_grad();
    // create_graph: autograd accumulates out of place, replacing the parameters' .grad tensors.
    loss_of(*flat_net, step).backward({}, /*retain_graph=*/true, /*create_graph=*/true);
    flat.step();
    EXPECT_LT(max_difference(*reference, *flat_net), 1e-6) << "step " << step;
  }
}

TEST(FlatAdamW, ResumesExactlyFromItsSavedState) {
  torch::manual_seed(2);
  auto a = std::make_shared<Net>();
  auto b = copy_of(*a);
  AdamWSettings s;
  FlatAdamW opt_a(a->parameters(), s), opt_b(b->parameters(), s);
  auto train = [](Net& n, FlatAdamW& o, int from, int to) {
    for (int step = from; step < to; ++step) {
      o.zero_grad();
      loss_of(n, step).backward();
      o.step();
    }
  };
  train(*a, opt_a, 0, 6);
  train(*b, opt_b, 0, 3);
  flowkit::io::TensorDict state;
  opt_b.save(state, "opt/");
  auto c = copy_of(*b);
  FlatAdamW opt_c(c->parameters(), s);
  opt_c.load(state, "opt/");
  train(*c, opt_c, 3, 6);
  EXPECT_EQ(max_difference(*a, *c), 0.0);
  // A model whose parameters all train shares one buffer with the EMA.
  auto plain = std::make_shared<torch::nn::LinearImpl>(2, 2);
  FlatAdamW whole(plain->parameters(), s);
  ASSERT_TRUE(whole.all_parameters().defined());
  EXPECT_EQ(whole.all_parameters().numel(), 6);
  EXPECT_EQ(plain->weight.data_ptr(), whole.all_parameters().data_ptr());
}
