// flowkit/model.h — a network: a function of the state, the time(s) and the conditioning.
// Optional features (named outputs, representations, invertibility) are capabilities:
// flowkit/capabilities/*.h.
#pragma once
#include <torch/nn/module.h>

#include "flowkit/component.h"
#include "flowkit/tensor_map.h"

namespace flowkit {

class Model : public Component {
 public:
  ~Model() override;

  // x: [B, ...], t: [B]. Extra inputs travel in `cond` by name ("label", a second time
  // "r", an observation "obs", ...); a model ignores names it does not use.
  virtual torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& t,
                                const Conditioning& cond) = 0;
  // The trainable module: parameters, buffers, train()/eval(), to(device).
  virtual torch::nn::Module& module() = 0;
};

}  // namespace flowkit
