// flowkit/guidance.h — a sampling-time stage between the solver and the model.
//
// The solver integrates the guided velocity without knowing it is guided; training never
// sees guidance. The host wraps the pipeline's model in a GuidedModel when the pipeline has
// a "guidance" section, so every solver of every plugin is guided the same way.
#pragma once
#include <cstdint>
#include <vector>

#include "flowkit/model.h"

namespace flowkit {

class Path;

// Times as [B]: a 0-dim t (one time for the whole batch) expanded.
inline torch::Tensor per_item_times(const torch::Tensor& t, int64_t batch) {
  return t.dim() == 0 ? t.expand({batch}) : t.reshape({batch});
}

// The strength of a guidance and the times it acts at, shared by every kind of guidance.
struct GuidanceWindow {
  double scale = 0;  // strength (its meaning is the guidance's own)
  double t_min = 0;  // guided only for t in [t_min, t_max] (a guidance interval)
  double t_max = 1;
  // [B] mask of the items whose time lies in the window; t is [B] or 0-dim.
  torch::Tensor inside(const torch::Tensor& t, int64_t batch) const {
    const torch::Tensor tb = per_item_times(t, batch);
    return (tb >= t_min) & (tb <= t_max);
  }
};

// Per item, `guided` where mask [B] is true and `plain` elsewhere (mask broadcast over the
// item's dimensions).
inline torch::Tensor where_items(const torch::Tensor& mask, const torch::Tensor& guided, const torch::Tensor& plain) {
  std::vector<int64_t> shape(static_cast<size_t>(guided.dim()), 1);
  shape[0] = guided.size(0);
  return torch::where(mask.reshape(shape), guided, plain);
}

class Guidance : public Component {
 public:
  ~Guidance() override;
  // The velocity the solver sees at (x, t) [t: [B]], made from evaluations of `model`.
  // Sets *evaluations to the network evaluations per item this call made (classifier-free
  // guidance: 2 inside its interval, 1 outside), so the reported NFE counts them all.
  virtual torch::Tensor velocity(Model& model, const Path* path, const torch::Tensor& x, const torch::Tensor& t,
                                 const Conditioning& cond, int64_t* evaluations) const = 0;
};

// A Model whose forward is the guided velocity of `inner`: what the solver is given. Its
// module() is the inner one; it offers none of the inner model's capabilities (guidance
// changes what they would mean).
class GuidedModel : public Model {
 public:
  GuidedModel(Model& inner, const Guidance& guidance, const Path* path) : inner_(inner), guidance_(guidance), path_(path) {}
  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& t, const Conditioning& cond) override;
  torch::nn::Module& module() override { return inner_.module(); }
  // Network evaluations per item since construction or the last reset.
  int64_t evaluations() const { return evaluations_; }
  void reset_evaluations() { evaluations_ = 0; }

 private:
  Model& inner_;
  const Guidance& guidance_;
  const Path* path_;
  int64_t evaluations_ = 0;
};

}  // namespace flowkit
