// flowkit/guidance.h — a sampling-time stage between the solver and the model.
//
// The solver integrates the guided velocity without knowing it is guided; training never
// sees guidance. The host wraps the pipeline's model in a GuidedModel when the pipeline has
// a "guidance" section, so every solver of every plugin is guided the same way.
#pragma once
#include <cstdint>

#include "flowkit/model.h"

namespace flowkit {

class Path;

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
