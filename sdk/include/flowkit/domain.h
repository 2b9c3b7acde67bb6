// flowkit/domain.h — a kind of data: its datasets, its metrics and its writers. A domain
// with an environment implements the Environment capability (capabilities/environment.h).
#pragma once
#include <nlohmann/json.hpp>

#include <map>
#include <string>
#include <vector>

#include "flowkit/component.h"
#include "flowkit/tensor_map.h"

namespace flowkit {

class Domain : public Component {
 public:
  ~Domain() override;

  // Shape of one item of the primary field "x" (e.g. {2} or {1, 8, 8}); empty when the
  // domain has no fixed-shape primary field (crystals with a variable number of atoms).
  virtual std::vector<int64_t> item_shape() const = 0;
  // Number of classes of the "label" field, 0 if unlabelled.
  virtual int64_t num_classes() const { return 0; }

  // A random training minibatch of n items (an infinite, seeded sampler).
  virtual Batch train_batch(int64_t n, torch::Generator& gen) = 0;
  // n held-out items used as the reference of the metrics (fixed split, not used to train).
  virtual Batch reference(int64_t n, torch::Generator& gen) = 0;
  // Conditioning for generating items first .. first+n-1 of one sampling run (e.g. random
  // labels); empty when unconditional. The host samples in chunks and passes each chunk's
  // offset, so conditions tied to a position (CSP: the composition of reference item i) stay
  // paired with reference(count) whatever the chunk size.
  virtual Conditioning sample_conditions(int64_t first, int64_t n, torch::Generator& gen) const;
  // Shapes of one row of each conditioning field the domain provides ("obs": {4},
  // "label": {}), so a model can size its inputs without drawing data. Empty by default.
  virtual std::map<std::string, std::vector<int64_t>> condition_shapes() const { return {}; }

  // Names of the metrics `evaluate` understands; the first ones are the defaults.
  virtual std::vector<std::string> metric_names() const = 0;
  // Computes the named metrics of `generated` against `reference`: {"name": value, ...}.
  virtual nlohmann::json evaluate(const Batch& generated, const Batch& reference,
                                  const std::vector<std::string>& metrics,
                                  torch::Generator& gen) const = 0;
  // Writes samples under `dir` (files named from `stem`); returns the paths written.
  virtual std::vector<std::string> write(const Batch& samples, const std::string& dir,
                                         const std::string& stem) const = 0;
};

}  // namespace flowkit
