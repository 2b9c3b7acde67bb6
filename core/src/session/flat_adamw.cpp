#include "session/flat_adamw.h"

#include <cmath>
#include <map>

#include "flowkit/error.h"

namespace flowkit::core {

FlatAdamW::FlatAdamW(const std::vector<torch::Tensor>& params, const AdamWSettings& settings) : settings_(settings) {
  torch::NoGradGuard no_grad;
  std::map<std::pair<int, std::string>, size_t> group_of;  // (dtype, device) -> group
  bool all_trainable = true;
  for (const auto& p : params) {
    if (!p.requires_grad()) {
      all_trainable = false;
      continue;
    }
    if (p.is_sparse()) throw Error("the optimizer does not handle sparse parameters");
    auto key = std::make_pair(static_cast<int>(p.scalar_type()), p.device().str());
    auto [it, fresh] = group_of.emplace(key, groups_.size());
    if (fresh) groups_.emplace_back();
    groups_[it->second].params.push_back(p);
  }
  for (auto& g : groups_) {
    int64_t total = 0;
    for (const auto& p : g.params) g.offsets.push_back(total), total += p.numel();
    const auto options = g.params.front().options().requires_grad(false);
    g.param = torch::empty({total}, options);
    g.grad = torch::zeros({total}, options);
    g.exp_avg = torch::zeros({total}, options);
    g.exp_avg_sq = torch::zeros({total}, options);
    for (size_t i = 0; i < g.params.size(); ++i) {
      torch::Tensor& p = g.params[i];
      torch::Tensor view = g.param.narrow(0, g.offsets[i], p.numel()).view(p.sizes());
      view.copy_(p);
      p.set_data(view);
      p.mutable_grad() = g.grad.narrow(0, g.offsets[i], p.numel()).view(p.sizes());
    }
  }
  if (all_trainable && groups_.size() == 1) all_ = groups_.front().param;
}

void FlatAdamW::gather_grads() {
  for (auto& g : groups_)
    for (size_t i = 0; i < g.params.size(); ++i) {
      torch::Tensor& p = g.params[i];
      torch::Tensor view = g.grad.narrow(0, g.offsets[i], p.numel()).view(p.sizes());
      if (p.grad().defined() && p.grad().data_ptr() == view.data_ptr()) continue;
      torch::NoGradGuard no_grad;
      if (p.grad().defined()) view.copy_(p.grad());
      else view.zero_();
      p.mutable_grad() = view;
    }
}

std::vector<torch::Tensor> FlatAdamW::gradients() {
  gather_grads();
  std::vector<torch::Tensor> out;
  for (auto& g : groups_) out.push_back(g.grad);
  return out;
}

std::vector<torch::Tensor> FlatAdamW::moments() const {
  std::vector<torch::Tensor> out;
  for (const auto& g : groups_) out.push_back(g.exp_avg), out.push_back(g.exp_avg_sq);
  return out;
}

void FlatAdamW::zero_grad() {
  gather_grads();
  for (auto& g : groups_) g.grad.zero_();
}

double FlatAdamW::clip_grad_norm(double max_norm) {
  gather_grads();
  torch::NoGradGuard no_grad;
  std::vector<torch::Tensor> norms;
  for (auto& g : groups_) norms.push_back(g.grad.norm(2).to(torch::kDouble).cpu());
  const double total = norms.size() == 1 ? norms[0].item<double>() : torch::stack(norms).norm(2).item<double>();
  const double coef = max_norm / (total + 1e-6);
  if (coef < 1)
    for (auto& g : groups_) g.grad.mul_(coef);
  return total;
}

void FlatAdamW::step() {
  gather_grads();
  torch::NoGradGuard no_grad;
  ++step_;
  const auto& s = settings_;
  const double bias_correction1 = 1 - std::pow(s.beta1, static_cast<double>(step_));
  const double bias_correction2 = 1 - std::pow(s.beta2, static_cast<double>(step_));
  const double step_size = s.lr / bias_correction1;
  for (auto& g : groups_) {
    if (s.weight_decay != 0) g.param.mul_(1 - s.lr * s.weight_decay);
    g.exp_avg.mul_(s.beta1).add_(g.grad, 1 - s.beta1);
    g.exp_avg_sq.mul_(s.beta2).addcmul_(g.grad, g.grad, 1 - s.beta2);
    torch::Tensor denom = (g.exp_avg_sq.sqrt() / std::sqrt(bias_correction2)).add_(s.eps);
    g.param.addcdiv_(g.exp_avg, denom, -step_size);
  }
}

void FlatAdamW::save(io::TensorDict& t, const std::string& prefix) const {
  t.emplace_back(prefix + "step", torch::tensor(step_));
  for (size_t i = 0; i < groups_.size(); ++i) {
    t.emplace_back(prefix + "exp_avg_" + std::to_string(i), groups_[i].exp_avg);
    t.emplace_back(prefix + "exp_avg_sq_" + std::to_string(i), groups_[i].exp_avg_sq);
  }
}

void FlatAdamW::load(const io::TensorDict& t, const std::string& prefix) {
  auto get = [&](const std::string& key) {
    const torch::Tensor* found = io::find_tensor(t, prefix + key);
    if (!found) throw Error("it has no optimizer state '" + prefix + key + "'");
    return *found;
  };
  torch::Tensor step = get("step");
  if (step.numel() != 1) throw Error("its optimizer step is not one number");
  torch::NoGradGuard no_grad;
  for (size_t i = 0; i < groups_.size(); ++i) {
    torch::Tensor m = get("exp_avg_" + std::to_string(i)), v = get("exp_avg_sq_" + std::to_string(i));
    if (m.numel() != groups_[i].exp_avg.numel() || v.numel() != groups_[i].exp_avg_sq.numel())
      throw Error("its optimizer state has a different size from the model's parameters");
    groups_[i].exp_avg.copy_(m.reshape_as(groups_[i].exp_avg));
    groups_[i].exp_avg_sq.copy_(v.reshape_as(groups_[i].exp_avg_sq));
  }
  step_ = step.item<int64_t>();
}

}  // namespace flowkit::core
