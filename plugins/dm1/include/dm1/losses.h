// dm1/losses.h — the MeanFlow loss (forward-mode JVP) with dispersive regularisation, the
// dispersive terms themselves, and the behaviour-cloning regression loss.
//
// Official MeanFlow convention inside the loss (t = 1 noise): z_t = (1 - t) x + t eps,
// v = eps - x, u(z_t, r, t) the average velocity over [r, t], so z_r = z_t - (t - r) u.
#pragma once
#include <torch/torch.h>

#include <memory>
#include <string>

#include "flowkit/config.h"
#include "flowkit/loss.h"
#include "flowkit/model.h"
#include "flowkit/registry.h"

namespace dm1 {

// ---- dispersive regularisation -----------------------------------------------------------
// Wang & He InfoNCE-L2: log mean_{i,j} exp(-D_ij / tau), D_ij = |z_i - z_j|^2 (/ dim when
// normalize), diagonal included. Range [-ln B, 0]: 0 for identical rows, -ln B when all far.
torch::Tensor dispersive_wang_he(const torch::Tensor& z, double tau, bool normalize_by_dim = true);
// DM1's released form: s_ij = -|z_i - z_j|_2 / tau, s_ii = -1e9, s = clamp(s, -10, 10),
// L = -mean_i logsumexp_j(-s_ij). Range [-(10 + ln B), -log(e^10 + B - 1)].
torch::Tensor dispersive_dm1(const torch::Tensor& z, double tau);

// ---- MeanFlow -----------------------------------------------------------------------------
// u(z, r, t) and d/dt u = v . d_z u + d_t u at (z, t, r) with tangents (v, 1, 0).
struct Jvp { torch::Tensor u, dudt; };
// method: "forward_ad" | "double_backward" (reference). Neither keeps a graph.
Jvp meanflow_jvp(flowkit::Model& model, const torch::Tensor& z, const torch::Tensor& t, const torch::Tensor& r,
                 const torch::Tensor& v, const flowkit::Conditioning& cond, const std::string& method);

// Every field is a parameter of dm1.meanflow: build it with meanflow_options(config).
struct MeanFlowOptions {
  double ratio_r_neq_t{};      // DM1: flow_ratio 0.5; official MeanFlow 0.25
  double p_mean{}, p_std{};
  // mse (DM1) | adaptive (official, p = 1: l / sg(l + c) is a bounded, mode-seeking loss
  // whose minimiser for a bimodal target is one mode, not the conditional mean).
  std::string weighting;
  double adaptive_p{}, adaptive_c{};
  std::string jvp;                  // forward_ad | double_backward
  double dispersive_weight{};       // 0 disables
  std::string dispersive_form;      // wang_he | dm1
  double dispersive_tau{};
  std::string dispersive_taps;      // obs | obs_time | trunk | all
  std::string dispersive_pass;      // same | clean (DM1: separate pass, t, r ~ U(0,1))
  bool dispersive_normalize{};
};
// Reads every dm1.meanflow parameter (the resolved config holds the manifest's defaults).
MeanFlowOptions meanflow_options(const flowkit::Config& cfg);

// `dm1.meanflow`. With dispersive_weight > 0 the model must expose its representations
// (flowkit::RepresentationModel, e.g. dm1.policy).
class MeanFlowLoss : public flowkit::Loss {
 public:
  explicit MeanFlowLoss(MeanFlowOptions o) : o_(std::move(o)) {}
  flowkit::LossOutput compute(flowkit::Model& model, const flowkit::Path* path, const flowkit::Batch& batch,
                              torch::Generator& gen) override;
  // (t, r) with t >= r, logit-normal, a fraction 1 - ratio of rows with r = t.
  std::pair<torch::Tensor, torch::Tensor> sample_tr(int64_t n, torch::Generator& gen, const torch::TensorOptions& opts) const;
  const MeanFlowOptions& options() const { return o_; }

 private:
  MeanFlowOptions o_;
};

// Dispersive term of one set of representations (sum over the chosen taps), times weight.
torch::Tensor dispersive_term(const flowkit::TensorMap& representations, const MeanFlowOptions& o);

// `dm1.regression`: behaviour cloning, MSE of model(0, t = 0, r = 0, obs) against x.
class RegressionLoss : public flowkit::Loss {
 public:
  flowkit::LossOutput compute(flowkit::Model& model, const flowkit::Path* path, const flowkit::Batch& batch,
                              torch::Generator& gen) override;
};

std::unique_ptr<flowkit::Component> make_meanflow_loss(const flowkit::Config& cfg, const flowkit::BuildContext& ctx);
std::unique_ptr<flowkit::Component> make_regression_loss(const flowkit::Config& cfg, const flowkit::BuildContext& ctx);

}  // namespace dm1
