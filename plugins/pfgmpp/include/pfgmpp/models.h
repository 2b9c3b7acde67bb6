// pfgmpp/models.h — the models: `pfgmpp.edm` (EDM preconditioning around any model),
// `pfgmpp.resmlp` (residual MLP) and `pfgmpp.exact_denoiser` (training-free empirical denoiser).
// All of them read their time input t as sigma.
#pragma once
#include <torch/torch.h>

#include <memory>
#include <vector>

#include "flowkit/config.h"
#include "flowkit/linear.h"
#include "flowkit/model.h"
#include "flowkit/registry.h"

namespace pfgmpp {

// ---- EDM preconditioning -------------------------------------------------------------------

// EDM preconditioning (as functions of sigma): c_skip = s_d^2/(s^2+s_d^2), c_out = s s_d /
// sqrt(s^2+s_d^2), c_in = 1/sqrt(s^2+s_d^2), c_noise = ln(s)/4.
struct Precond {
  torch::Tensor c_skip, c_out, c_in, c_noise;
};
Precond edm_precond(const torch::Tensor& sigma, double sigma_data);

// forward(x, t, cond) reads t as sigma ([B] or 0-dim, clamped to >= 1e-20) and returns the
// denoiser D(x, sigma) = c_skip x + c_out F(c_in x, c_noise, cond) of the inner model F.
// It does not pass F's capabilities on (Component::capability_delegate stays null): its output
// is a denoised x, not F's output, so F's named outputs, representations or invertibility
// would describe a different function than forward().
class EdmModel : public flowkit::Model {
 public:
  EdmModel(std::unique_ptr<flowkit::Model> inner, double sigma_data);
  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& t, const flowkit::Conditioning& cond) override;
  torch::nn::Module& module() override { return *holder_; }
  flowkit::Model& inner() { return *inner_; }
  double sigma_data() const { return sigma_data_; }

 private:
  std::unique_ptr<flowkit::Model> inner_;
  std::shared_ptr<torch::nn::Module> holder_;  // registers the inner module as "net"
  double sigma_data_;
};

// ---- residual MLP --------------------------------------------------------------------------

// h = W_in x; blocks h += W2 act(W1 LN(h) + E(t)); out = W_out LN(h). E is a Fourier embedding
// of t (frequencies geometric in [1/2, 64]) through an MLP.
struct ResMLPOptions {
  int64_t hidden = 0;          // the parameters of `pfgmpp.resmlp` (plugin.json) ...
  int64_t blocks = 0;
  int64_t embedding_dim = 0;
  bool class_conditional = false;
  int64_t in_dim = 0;          // ... and what the domain gives: N and the number of classes
  int64_t num_classes = 0;
};
// Reads every key of a resolved config (in_dim and num_classes stay 0).
ResMLPOptions resmlp_options(const flowkit::Config& cfg);

class ResMLPImpl : public torch::nn::Module {
 public:
  explicit ResMLPImpl(const ResMLPOptions& o);
  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& t, const torch::Tensor& label);

 private:
  ResMLPOptions o_;
  torch::Tensor freqs_;
  flowkit::Linear embed1_{nullptr}, embed2_{nullptr}, input_{nullptr}, output_{nullptr};
  torch::nn::LayerNorm out_norm_{nullptr};
  torch::nn::ModuleList norms_{nullptr}, fc1_{nullptr}, fc2_{nullptr}, temb_{nullptr};
  torch::nn::Embedding label_embed_{nullptr};
};
TORCH_MODULE(ResMLP);

class ResMLPModel : public flowkit::Model {
 public:
  ResMLPModel(const ResMLPOptions& o, std::vector<int64_t> item_shape);
  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& t, const flowkit::Conditioning& cond) override;
  torch::nn::Module& module() override { return *net_; }

 private:
  ResMLP net_;
  std::vector<int64_t> item_shape_;
};

// ---- exact denoiser ------------------------------------------------------------------------

// The exact (training-free) denoiser of a finite training set {y_j}:
// D*(x, sigma) = sum_j w_j y_j, w_j ∝ (|x - y_j|^2 + sigma^2 D)^(-(N+D)/2); D = inf: softmax of
// -|x - y_j|^2 / (2 sigma^2). forward() reads t as sigma. Float64 inside.
torch::Tensor exact_denoiser(const torch::Tensor& x, const torch::Tensor& sigma, const torch::Tensor& data, double D);
class ExactDenoiser : public flowkit::Model {
 public:
  ExactDenoiser(torch::Tensor data, double D);
  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& t, const flowkit::Conditioning& cond) override;
  torch::nn::Module& module() override { return *module_; }  // one dummy parameter "scale" (= 1)
  const torch::Tensor& data() const { return data_; }

 private:
  torch::Tensor data_;  // [M, item...]
  double D_;
  std::shared_ptr<torch::nn::Module> module_;
  torch::Tensor scale_;
};

std::unique_ptr<flowkit::Component> make_edm(const flowkit::Config& cfg, const flowkit::BuildContext& ctx);
std::unique_ptr<flowkit::Component> make_resmlp(const flowkit::Config& cfg, const flowkit::BuildContext& ctx);
std::unique_ptr<flowkit::Component> make_exact_denoiser(const flowkit::Config& cfg, const flowkit::BuildContext& ctx);

}  // namespace pfgmpp
