// The SDK's layers (flowkit/linear.h, flowkit/time_embedding.h) against LibTorch's linear, the
// closed form of the sinusoidal embedding and autograd.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cmath>

#include "flowkit/linear.h"
#include "flowkit/time_embedding.h"

TEST(SdkLinear, MatchesTorchLinearAtEveryBatchSizeWithAndWithoutBias) {
  torch::manual_seed(3);
  for (bool bias : {true, false}) {
    flowkit::Linear layer(torch::nn::LinearOptions(37, 19).bias(bias));
    for (int64_t rows : {1, 2, 5}) {
      torch::Tensor x = torch::randn({rows, 37});
      torch::Tensor y = layer->forward(x);
      torch::Tensor ref = torch::nn::functional::linear(x, layer->weight, bias ? layer->bias : torch::Tensor());
      ASSERT_EQ(y.sizes(), ref.sizes()) << "rows " << rows;
      EXPECT_TRUE(torch::allclose(y, ref, 1e-5, 1e-6)) << "rows " << rows << " bias " << bias;
    }
    // A single row of a 3-D input takes LibTorch's path and agrees too.
    torch::Tensor x3 = torch::randn({1, 4, 37});
    EXPECT_TRUE(torch::allclose(layer->forward(x3), torch::nn::functional::linear(x3, layer->weight, bias ? layer->bias : torch::Tensor()),
                                1e-5, 1e-6));
  }
}

TEST(SdkLinear, SingleRowGradientsEqualTorchLinear) {
  torch::manual_seed(4);
  flowkit::Linear layer(11, 7);
  torch::Tensor x = torch::randn({1, 11}, torch::requires_grad());
  torch::Tensor w = torch::randn({1, 7});
  (layer->forward(x) * w).sum().backward();
  torch::Tensor gx = x.grad().clone(), gw = layer->weight.grad().clone(), gb = layer->bias.grad().clone();
  // Independent: d(w . (W x + b)) = W^T w, w x^T, w.
  EXPECT_TRUE(torch::allclose(gx, w.matmul(layer->weight.detach()), 1e-5, 1e-6));
  EXPECT_TRUE(torch::allclose(gw, w.t().matmul(x.detach()), 1e-5, 1e-6));
  EXPECT_TRUE(torch::allclose(gb, w.reshape({7}), 1e-5, 1e-6));
  // Parameters keep LibTorch's names, so checkpoints of torch::nn::Linear models still load.
  auto names = layer->named_parameters().keys();
  EXPECT_EQ(names, (std::vector<std::string>{"weight", "bias"}));
}

TEST(SdkTimeEmbedding, ClosedFormOddDimAndScalarTime) {
  flowkit::SinusoidalTimeEmbedding emb(9, 1000.0);
  torch::Tensor t = torch::tensor({0.0, 0.25, 0.9}, torch::kDouble);
  torch::Tensor e = emb(t);
  ASSERT_EQ(e.sizes(), torch::IntArrayRef({3, 9}));
  const int half = 4;
  for (int i = 0; i < 3; ++i) {
    const double ti = t[i].item<double>();
    for (int k = 0; k < half; ++k) {
      const double f = std::pow(10000.0, -static_cast<double>(k) / half);
      EXPECT_NEAR(e[i][k].item<double>(), std::sin(1000.0 * ti * f), 1e-9);
      EXPECT_NEAR(e[i][half + k].item<double>(), std::cos(1000.0 * ti * f), 1e-9);
    }
    EXPECT_EQ(e[i][8].item<double>(), 0.0);  // the odd dim's zero column
  }
  EXPECT_EQ(emb(torch::scalar_tensor(0.25, torch::kDouble)).sizes(), torch::IntArrayRef({1, 9}));
  EXPECT_TRUE(torch::equal(emb(torch::scalar_tensor(0.25, torch::kDouble))[0], e[1]));
}

TEST(SdkTimeEmbedding, FrequenciesCachedUnderInferenceModeDoNotBreakTraining) {
  flowkit::SinusoidalTimeEmbedding emb(8, 1.0);
  torch::Tensor first;
  {
    c10::InferenceMode inference;
    first = emb(torch::full({2}, 0.5));
  }
  // After an inference-mode call, a call that autograd records must still work and agree.
  torch::Tensor t = torch::full({2}, 0.5, torch::requires_grad());
  torch::Tensor e = emb(t);
  e.sum().backward();
  EXPECT_TRUE(torch::allclose(e.detach(), first));
  // d/dt sum(sin(t f) + cos(t f)) = sum f (cos(t f) - sin(t f)).
  double expected = 0;
  for (int k = 0; k < 4; ++k) {
    const double f = std::pow(10000.0, -k / 4.0);
    expected += f * (std::cos(0.5 * f) - std::sin(0.5 * f));
  }
  EXPECT_NEAR(t.grad()[0].item<double>(), expected, 1e-5);
  // A new dtype gets its own frequencies.
  EXPECT_EQ(emb(torch::full({2}, 0.5, torch::kDouble)).scalar_type(), torch::kDouble);
}
