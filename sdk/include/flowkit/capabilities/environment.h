// flowkit/capabilities/environment.h — a domain with an environment (a control task, a
// simulator, a robot): `eval` rolls the pipeline's policy out in it instead of comparing
// samples with data.
#pragma once
#include <nlohmann/json.hpp>

#include <functional>
#include <string>
#include <vector>

#include "flowkit/tensor_map.h"

namespace flowkit {

// Observation rows in (a batch of named tensors, one row per environment), one action chunk
// per row out ("x" shaped [B, item_shape...]).
using Policy = std::function<torch::Tensor(const Conditioning& observation, torch::Generator& gen)>;

class Environment {
 public:
  virtual ~Environment();
  // Runs `policy` and reports the named metrics (names from the domain's metric_names()).
  virtual nlohmann::json rollout(const Policy& policy, const std::vector<std::string>& metrics,
                                 torch::Generator& gen) const = 0;
};

}  // namespace flowkit
