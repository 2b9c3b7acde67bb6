// flowkit/capabilities/named_outputs.h — a model with several named inputs and outputs
// (a crystal network: lattice, fractional coordinates and atom types in, one head each out).
#pragma once
#include <string>
#include <vector>

#include "flowkit/tensor_map.h"

namespace flowkit {

class NamedOutputModel {
 public:
  virtual ~NamedOutputModel();
  // All of the model's heads for a state given as named fields (times included, e.g. "t").
  virtual TensorMap forward_named(const TensorMap& inputs) = 0;
  // The names forward_named returns.
  virtual std::vector<std::string> output_names() const = 0;
};

}  // namespace flowkit
