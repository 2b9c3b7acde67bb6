// dm1/policy.h — the `dm1.policy` network u(z, r, t | obs) and its model component, which
// exposes its intermediate representations (flowkit::RepresentationModel).
#pragma once
#include <torch/torch.h>

#include <memory>
#include <string>
#include <vector>

#include "flowkit/capabilities/representations.h"
#include "flowkit/config.h"
#include "flowkit/linear.h"
#include "flowkit/model.h"
#include "flowkit/registry.h"
#include "flowkit/time_embedding.h"

namespace dm1 {

struct PolicyOptions {
  // Sizes from the domain (make_policy: item_shape() and condition_shapes()).
  int64_t action_dim{};             // flattened chunk
  std::vector<int64_t> obs_shape;   // [D] (state) or [C, H, W] (image)
  int64_t proprio_dim = 0;
  // Parameters of dm1.policy (policy_options).
  int64_t hidden{};
  int64_t layers{};              // residual trunk blocks
  int64_t obs_hidden{};
  int64_t obs_embed{};
  int64_t time_embed{};          // sinusoidal size; each time MLP maps it to 2*time_embed
  double time_scale{};           // sinusoid argument scale (official MeanFlow: t in [0, 1] unscaled)
  std::string time_inputs;       // t_h: (t, t - r) (official) | t_r: (t, r) (DM1)
};
// Reads every dm1.policy parameter; the sizes from the domain are left to the caller.
PolicyOptions policy_options(const flowkit::Config& cfg);

class PolicyNetImpl : public torch::nn::Module {
 public:
  explicit PolicyNetImpl(const PolicyOptions& o);
  // z: [B, action_dim], t, r: [B]; obs as in PolicyOptions; proprio [B, P] or undefined.
  // With `representations`, also returns those of this pass there: "obs" (the observation
  // embedding), "t", "r" (the two time embeddings), "trunk0".. (each residual block's output).
  torch::Tensor forward(const torch::Tensor& z, const torch::Tensor& t, const torch::Tensor& r,
                        const torch::Tensor& obs, const torch::Tensor& proprio,
                        flowkit::TensorMap* representations = nullptr);
  torch::Tensor encode(const torch::Tensor& obs, const torch::Tensor& proprio);
  const PolicyOptions& options() const { return o_; }

 private:
  PolicyOptions o_;
  torch::nn::Sequential state_enc_{nullptr}, conv_{nullptr};
  flowkit::Linear img_head_{nullptr};
  flowkit::Linear t1_{nullptr}, t2_{nullptr}, r1_{nullptr}, r2_{nullptr}, in_{nullptr}, out_{nullptr};
  torch::nn::ModuleList blocks_{nullptr};
  flowkit::SinusoidalTimeEmbedding t_embedding_, r_embedding_;  // one each: a frequency cache per use
};
TORCH_MODULE(PolicyNet);

// `dm1.policy`: reads cond "obs" (+ "proprio") and "r" (absent: r = t).
class PolicyModel : public flowkit::Model, public flowkit::RepresentationModel {
 public:
  PolicyModel(const PolicyOptions& o, const std::string& device);
  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& t, const flowkit::Conditioning& cond) override;
  // The output and "obs", "t", "r", "trunk<i>" of the same pass, [B, D] each, with the graph.
  std::pair<torch::Tensor, flowkit::TensorMap> forward_with_representations(const torch::Tensor& x, const torch::Tensor& t,
                                                                            const flowkit::Conditioning& cond) override;
  torch::nn::Module& module() override { return *net_; }
  PolicyNet& net() { return net_; }

 private:
  torch::Tensor run(const torch::Tensor& x, const torch::Tensor& t, const flowkit::Conditioning& cond,
                    flowkit::TensorMap* representations);
  PolicyNet net_;
};

// `dm1.policy` (needs the domain: action chunk shape and observation shapes).
std::unique_ptr<flowkit::Component> make_policy(const flowkit::Config& cfg, const flowkit::BuildContext& ctx);

}  // namespace dm1
