// The dm1.policy network and model component.
#include "dm1/policy.h"

#include <torch/torch.h>

#include <cmath>

#include "flowkit/domain.h"
#include "flowkit/error.h"

namespace dm1 {

// ---- policy network -----------------------------------------------------------------------

PolicyNetImpl::PolicyNetImpl(const PolicyOptions& o)
    : o_(o), t_embedding_(o.time_embed, o.time_scale), r_embedding_(o.time_embed, o.time_scale) {
  const int64_t E = o.time_embed;
  if (o.obs_shape.size() == 1) {
    state_enc_ = register_module("state_enc", torch::nn::Sequential(flowkit::Linear(o.obs_shape[0] + o.proprio_dim, o.obs_hidden),
                                                                    torch::nn::SiLU(), flowkit::Linear(o.obs_hidden, o.obs_hidden),
                                                                    torch::nn::SiLU(), flowkit::Linear(o.obs_hidden, o.obs_embed)));
  } else if (o.obs_shape.size() == 3) {
    conv_ = register_module(
        "conv", torch::nn::Sequential(torch::nn::Conv2d(torch::nn::Conv2dOptions(o.obs_shape[0], 16, 3).stride(2).padding(1)),
                                      torch::nn::SiLU(),
                                      torch::nn::Conv2d(torch::nn::Conv2dOptions(16, 32, 3).stride(2).padding(1)),
                                      torch::nn::SiLU(), torch::nn::Flatten()));
    int64_t flat;
    {
      torch::NoGradGuard ng;
      flat = conv_->forward(torch::zeros({1, o.obs_shape[0], o.obs_shape[1], o.obs_shape[2]})).size(1);
    }
    img_head_ = register_module("img_head", flowkit::Linear(flat + o.proprio_dim, o.obs_embed));
  } else {
    throw flowkit::Error("dm1.policy: observation 'obs' must be [B, D] or [B, C, H, W]");
  }
  t1_ = register_module("t1", flowkit::Linear(E, 2 * E));
  t2_ = register_module("t2", flowkit::Linear(2 * E, E));
  r1_ = register_module("r1", flowkit::Linear(E, 2 * E));
  r2_ = register_module("r2", flowkit::Linear(2 * E, E));
  in_ = register_module("in", flowkit::Linear(o.action_dim + 2 * E + o.obs_embed, o.hidden));
  blocks_ = register_module("blocks", torch::nn::ModuleList());
  for (int64_t i = 0; i < o.layers; ++i)
    blocks_->push_back(torch::nn::Sequential(flowkit::Linear(o.hidden, o.hidden), torch::nn::SiLU(),
                                             flowkit::Linear(o.hidden, o.hidden)));
  out_ = register_module("out", flowkit::Linear(o.hidden, o.action_dim));
}

torch::Tensor PolicyNetImpl::encode(const torch::Tensor& obs, const torch::Tensor& proprio) {
  if (state_enc_) {
    torch::Tensor in = proprio.defined() && o_.proprio_dim > 0 ? torch::cat({obs.flatten(1), proprio}, 1) : obs.flatten(1);
    return state_enc_->forward(in);
  }
  torch::Tensor f = conv_->forward(obs);
  if (o_.proprio_dim > 0) f = torch::cat({f, proprio}, 1);
  return img_head_->forward(f);
}

torch::Tensor PolicyNetImpl::forward(const torch::Tensor& z, const torch::Tensor& t, const torch::Tensor& r,
                                     const torch::Tensor& obs, const torch::Tensor& proprio,
                                     flowkit::TensorMap* representations) {
  torch::Tensor e_obs = encode(obs, proprio);
  torch::Tensor second = o_.time_inputs == "t_h" ? t - r : r;
  torch::Tensor e_t = t2_->forward(torch::silu(t1_->forward(t_embedding_(t))));
  torch::Tensor e_r = r2_->forward(torch::silu(r1_->forward(r_embedding_(second))));
  torch::Tensor h = torch::silu(in_->forward(torch::cat({z, e_t, e_r, e_obs}, 1)));
  if (representations) {
    representations->set("obs", e_obs);
    representations->set("t", e_t);
    representations->set("r", e_r);
  }
  int64_t i = 0;
  for (const auto& block : *blocks_) {
    h = h + block->as<torch::nn::Sequential>()->forward(torch::silu(h));
    if (representations) representations->set("trunk" + std::to_string(i++), h);
  }
  return out_->forward(torch::silu(h));
}

PolicyModel::PolicyModel(const PolicyOptions& o, const std::string& device) : net_(o) {
  net_->to(torch::Device(device));
}

namespace {
torch::Tensor as_batch_time(const torch::Tensor& t, const torch::Tensor& like) {
  const int64_t B = like.size(0);
  torch::Tensor tt = t.to(like.device(), like.scalar_type());
  if (tt.dim() == 0 || tt.numel() == 1) tt = tt.reshape({1}).expand({B});
  return tt.reshape({B});
}
}  // namespace

torch::Tensor PolicyModel::run(const torch::Tensor& x, const torch::Tensor& t, const flowkit::Conditioning& cond,
                               flowkit::TensorMap* representations) {
  const int64_t B = x.size(0);
  torch::Tensor tt = as_batch_time(t, x);
  torch::Tensor r = cond.has("r") ? as_batch_time(cond.at("r"), x) : tt;
  torch::Tensor obs = cond.at("obs").to(x.device(), x.scalar_type());
  torch::Tensor proprio;
  if (net_->options().proprio_dim > 0) proprio = cond.at("proprio").to(x.device(), x.scalar_type());
  return net_->forward(x.reshape({B, -1}), tt, r, obs, proprio, representations).reshape(x.sizes());
}

torch::Tensor PolicyModel::forward(const torch::Tensor& x, const torch::Tensor& t, const flowkit::Conditioning& cond) {
  return run(x, t, cond, nullptr);
}

std::pair<torch::Tensor, flowkit::TensorMap> PolicyModel::forward_with_representations(const torch::Tensor& x,
                                                                                       const torch::Tensor& t,
                                                                                       const flowkit::Conditioning& cond) {
  flowkit::TensorMap reps;
  torch::Tensor out = run(x, t, cond, &reps);
  return {out, reps};
}

// ---- factory ------------------------------------------------------------------------------

PolicyOptions policy_options(const flowkit::Config& cfg) {
  PolicyOptions o;
  o.hidden = cfg.get<int64_t>("hidden");
  o.layers = cfg.get<int64_t>("layers");
  o.obs_hidden = cfg.get<int64_t>("obs_hidden");
  o.obs_embed = cfg.get<int64_t>("obs_embed");
  o.time_embed = cfg.get<int64_t>("time_embed");
  o.time_scale = cfg.get<double>("time_scale");
  o.time_inputs = cfg.get<std::string>("time_inputs");
  return o;
}

std::unique_ptr<flowkit::Component> make_policy(const flowkit::Config& cfg, const flowkit::BuildContext& ctx) {
  PolicyOptions o = policy_options(cfg);
  if (!ctx.domain) cfg.fail("type", "dm1.policy needs a domain (action shape, observation shapes)");
  std::vector<int64_t> shape = ctx.domain->item_shape();
  if (shape.empty()) cfg.fail("type", "dm1.policy needs a domain with a fixed item shape");
  o.action_dim = 1;
  for (int64_t d : shape) o.action_dim *= d;
  const auto fields = ctx.domain->condition_shapes();
  auto obs = fields.find("obs");
  if (obs == fields.end()) cfg.fail("type", "dm1.policy needs a domain whose conditions hold an observation 'obs'");
  o.obs_shape = obs->second;
  if (o.obs_shape.size() == 2) o.obs_shape.insert(o.obs_shape.begin(), 1);
  if (o.obs_shape.size() != 1 && o.obs_shape.size() != 3)
    cfg.fail("type", "dm1.policy: 'obs' must be [B, D], [B, H, W] or [B, C, H, W]");
  auto proprio = fields.find("proprio");
  if (proprio != fields.end()) {
    if (proprio->second.size() != 1) cfg.fail("type", "dm1.policy: 'proprio' must be [B, P]");
    o.proprio_dim = proprio->second[0];
  }
  return std::make_unique<PolicyModel>(o, ctx.device);
}

}  // namespace dm1
