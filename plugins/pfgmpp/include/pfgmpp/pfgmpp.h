// pfgmpp/pfgmpp.h — PFGM++ (Xu et al., ICML 2023): Poisson flows in N+D dimensions.
//
// Data x in R^N is augmented by D dimensions; with r = sigma sqrt(D) the perturbation kernel
// is p_r(x|y) ∝ (|x-y|^2 + r^2)^(-(N+D)/2), D = inf being the Gaussian (EDM) case. The
// probability-flow ODE in sigma is EDM's, dx/dsigma = (x - D_theta(x, sigma)) / sigma, for
// every D: only the training perturbation and the prior depend on D.
//
// Components: pfgmpp.kernel (path), pfgmpp.edm (preconditioning wrapper over any model),
// pfgmpp.resmlp (residual MLP), pfgmpp.exact_denoiser (training-free empirical denoiser),
// pfgmpp.edm_loss (loss), pfgmpp.heun (sampler).
#pragma once
#include <torch/torch.h>

#include <limits>
#include <memory>
#include <string>
#include <vector>

#include "flowkit/config.h"
#include "flowkit/loss.h"
#include "flowkit/model.h"
#include "flowkit/path.h"
#include "flowkit/registry.h"
#include "flowkit/solver.h"

namespace pfgmpp {

constexpr double kInf = std::numeric_limits<double>::infinity();

// ---- the N+D kernel ----------------------------------------------------------------------

// Gamma(alpha, 1) draws (float64, on the generator's device, moved to `device`).
torch::Tensor gamma_draws(double alpha, int64_t n, torch::Generator& gen, const torch::Device& device);

struct Perturbation {
  torch::Tensor noise;        // [n, item_shape...] of options' dtype/device
  torch::Tensor radius;       // [n] float64: |noise|
  double clipped_fraction = 0;  // share of the Beta draws changed by the clip
};

// n perturbations of the N+D kernel at noise level sigma ([n] float64 or a scalar):
// R = sigma sqrt(D) sqrt(B/(1-B)), B ~ Beta(N/2, D/2) (= G1/(G1+G2), G1 ~ Gamma(N/2),
// G2 ~ Gamma(D/2)), direction uniform on the sphere (g/|g|, g ~ N(0, I)). D = inf: sigma*N(0, I).
// clip > 0 clips B to [clip, 1 - clip] (the official training code, clip = 1e-3);
// clip_lower = false applies only the upper bound 1 - clip.
Perturbation perturb(double D, const torch::Tensor& sigma, int64_t n, const std::vector<int64_t>& item_shape,
                     torch::Generator& gen, const torch::TensorOptions& options, double clip = 0,
                     bool clip_lower = true);

struct KernelOptions {
  double D = 128;           // augmented dimensions; inf = Gaussian
  double sigma_min = 0.002; // range of the t <-> sigma map of sample()
  double sigma_max = 80;
  double beta_clip = 1e-3;  // training clip of B (0: none)
  bool clip_lower = true;   // also clip B from below (official); see docs/methods/pfgmpp.md
};

// The path. sample(x0, x1, t): sigma(t) = sigma_max^(1-t) sigma_min^t (t = 0 noise), x_t = x1 +
// sigma(t) x0, dx_t = sigma'(t) x0, extras "sigma". prior(): the unit-scale (sigma = 1) kernel
// perturbation, not clipped; the sampler multiplies it by sigma_max (so r_max = sigma_max sqrt(D)).
class KernelPath : public flowkit::Path {
 public:
  explicit KernelPath(KernelOptions o) : o_(o) {}
  flowkit::PathSample sample(const torch::Tensor& x0, const torch::Tensor& x1, const torch::Tensor& t) const override;
  torch::Tensor prior(int64_t n, const std::vector<int64_t>& item_shape, torch::Generator& gen,
                      const torch::TensorOptions& options) const override;
  torch::Tensor sigma_of_t(const torch::Tensor& t) const;
  // Training perturbation (with the clip) at noise levels sigma [n].
  Perturbation training_noise(const torch::Tensor& sigma, const std::vector<int64_t>& item_shape,
                              torch::Generator& gen, const torch::TensorOptions& options) const;
  const KernelOptions& options() const { return o_; }

 private:
  KernelOptions o_;
};

// ---- models --------------------------------------------------------------------------------

// EDM preconditioning (as functions of sigma): c_skip = s_d^2/(s^2+s_d^2), c_out = s s_d /
// sqrt(s^2+s_d^2), c_in = 1/sqrt(s^2+s_d^2), c_noise = ln(s)/4.
struct Precond {
  torch::Tensor c_skip, c_out, c_in, c_noise;
};
Precond edm_precond(const torch::Tensor& sigma, double sigma_data);

// forward(x, t, cond) reads t as sigma ([B] or 0-dim, clamped to >= 1e-20) and returns the
// denoiser D(x, sigma) = c_skip x + c_out F(c_in x, c_noise, cond) of the inner model F.
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

// Residual MLP for flat or image data: h = W_in x; blocks h += W2 act(W1 LN(h) + E(t)); out =
// W_out LN(h). E is a Fourier embedding of t (frequencies geometric in [1/2, 64]) through an MLP.
struct ResMLPOptions {
  int64_t in_dim = 2;
  int64_t hidden = 256;
  int64_t blocks = 4;
  int64_t embedding_dim = 64;
  bool class_conditional = false;
  int64_t num_classes = 0;
};
class ResMLPImpl : public torch::nn::Module {
 public:
  explicit ResMLPImpl(const ResMLPOptions& o);
  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& t, const torch::Tensor& label);

 private:
  ResMLPOptions o_;
  torch::Tensor freqs_;
  torch::nn::Linear embed1_{nullptr}, embed2_{nullptr}, input_{nullptr}, output_{nullptr};
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

// ---- loss ----------------------------------------------------------------------------------

struct LossOptions {
  double p_mean = -1.2, p_std = 1.2, sigma_data = 0.5;
};
// sigma = exp(P_mean + P_std xi); x = y + n with n the kernel perturbation of the pipeline's
// pfgmpp.kernel path (any other path or none: Gaussian, D = inf); loss = mean over the batch
// of the sum over the item of lambda(sigma) (D(x, sigma) - y)^2, lambda = (s^2+s_d^2)/(s s_d)^2.
// Logs: clipped_fraction, sigma_mean.
class EdmLoss : public flowkit::Loss {
 public:
  explicit EdmLoss(LossOptions o) : o_(o) {}
  flowkit::LossOutput compute(flowkit::Model& model, const flowkit::Path* path, const flowkit::Batch& batch,
                              torch::Generator& gen) override;

 private:
  LossOptions o_;
};

// ---- sampler -------------------------------------------------------------------------------

struct HeunOptions {
  int64_t steps = 18;
  double sigma_min = 0.002, sigma_max = 80, rho = 7;
  double alpha = 0;     // noise injection x += alpha sigma_i eps before each step
  int64_t bits = 0;     // 0: no weight quantization; else b-bit per-tensor min-max
};

// EDM grid: sigma_i = (smax^(1/rho) + i/(n-1) (smin^(1/rho) - smax^(1/rho)))^rho, i < n, then 0
// (n + 1 points, decreasing). n = 1 gives {sigma_max, 0}.
torch::Tensor edm_sigma_grid(int64_t n, double sigma_min, double sigma_max, double rho);

// Quantize-dequantize (per tensor, min-max affine, zero point clamped to [0, 2^b - 1]) every
// parameter whose name contains "weight" but none of "norm", "embed", "time", "map", "affine".
// Returns the names changed. (Used by the sampler; exposed for tests.)
std::vector<std::string> quantize_weights(torch::nn::Module& module, int64_t bits);
torch::Tensor quantize_tensor(const torch::Tensor& w, int64_t bits);

class HeunSolver : public flowkit::Solver {
 public:
  explicit HeunSolver(HeunOptions o) : o_(o) {}
  // Heun steps between successive grid times; the step into a grid time of exactly 0 is Euler
  // (the EDM sampler's last step). alpha > 0 adds alpha |t_i| eps (eps from gen) before each step.
  flowkit::SolveResult integrate(const flowkit::VectorField& f, const torch::Tensor& x0, const torch::Tensor& grid,
                                 torch::Generator& gen, bool keep_intermediates = false) const override;
  // x0 = sigma_max * path->prior(...) (path null: N(0, I) * sigma_max), then the ODE
  // dx/dsigma = (x - model(x, sigma, cond)) / sigma over grid(steps); model weights quantized
  // for the call when bits > 0 (and restored after).
  flowkit::SolveResult sample(flowkit::Model& model, const flowkit::Path* path, const flowkit::SampleRequest& request,
                              torch::Generator& gen) const override;
  torch::Tensor grid(int64_t steps) const override;
  const HeunOptions& options() const { return o_; }

 private:
  HeunOptions o_;
};

// ---- factories -----------------------------------------------------------------------------

// A number parameter that may be the string "inf" (manifest allow_inf).
double number_or_inf(const flowkit::Config& cfg, const std::string& key, double fallback, double min);

std::unique_ptr<flowkit::Component> make_kernel(const flowkit::Config& cfg, const flowkit::BuildContext& ctx);
std::unique_ptr<flowkit::Component> make_edm(const flowkit::Config& cfg, const flowkit::BuildContext& ctx);
std::unique_ptr<flowkit::Component> make_resmlp(const flowkit::Config& cfg, const flowkit::BuildContext& ctx);
std::unique_ptr<flowkit::Component> make_exact_denoiser(const flowkit::Config& cfg, const flowkit::BuildContext& ctx);
std::unique_ptr<flowkit::Component> make_edm_loss(const flowkit::Config& cfg, const flowkit::BuildContext& ctx);
std::unique_ptr<flowkit::Component> make_heun(const flowkit::Config& cfg, const flowkit::BuildContext& ctx);
void register_components(flowkit::Registry& registry);

}  // namespace pfgmpp
