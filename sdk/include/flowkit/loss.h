// flowkit/loss.h — a training objective. The loss owns the draw of times and path points,
// so a method with two times, a JVP or no path at all fits the same interface.
#pragma once
#include <map>
#include <string>

#include "flowkit/component.h"
#include "flowkit/tensor_map.h"

namespace flowkit {

class Model;
class Path;

struct LossOutput {
  torch::Tensor loss;                    // scalar, differentiable
  std::map<std::string, double> logs;    // extra scalars for metrics.jsonl
};

class Loss : public Component {
 public:
  ~Loss() override;
  // `path` is null when the pipeline has none (a normalizing flow).
  virtual LossOutput compute(Model& model, const Path* path, const Batch& batch,
                             torch::Generator& gen) = 0;
};

}  // namespace flowkit
