// flowkit/capabilities/representations.h — a model exposing named intermediate
// representations (an observation embedding, time embeddings, trunk activations).
#pragma once
#include <utility>

#include "flowkit/tensor_map.h"

namespace flowkit {

class RepresentationModel {
 public:
  virtual ~RepresentationModel();
  // The model's output for (x, t, cond) and its representations of that same pass
  // ([B, ...] each), with the autograd graph (a regulariser can backpropagate through them).
  virtual std::pair<torch::Tensor, TensorMap> forward_with_representations(const torch::Tensor& x, const torch::Tensor& t,
                                                                           const Conditioning& cond) = 0;
};

}  // namespace flowkit
