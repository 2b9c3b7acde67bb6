// flowkit/tensor_map.h — named tensors: a batch of data, or a conditioning set.
#pragma once
#include <torch/types.h>

#include <map>
#include <string>
#include <vector>

namespace flowkit {

// A batch is a set of named tensors sharing a leading batch dimension where that makes
// sense ("x" [B, ...], "label" [B]). Multi-field data (a crystal: "lattice", "frac",
// "types", "num_atoms", ...) uses several names.
class TensorMap {
 public:
  TensorMap() = default;
  TensorMap(std::initializer_list<std::pair<const std::string, torch::Tensor>> init) : map_(init) {}

  bool has(const std::string& name) const { return map_.count(name) != 0; }
  // Throws flowkit::Error naming the missing field and the fields present.
  const torch::Tensor& at(const std::string& name) const;
  void set(const std::string& name, torch::Tensor value) { map_[name] = std::move(value); }
  void erase(const std::string& name) { map_.erase(name); }
  // A copy without the named fields (a batch's conditioning: every field but "x").
  TensorMap without(std::initializer_list<const char*> names) const {
    TensorMap out = *this;
    for (const char* n : names) out.erase(n);
    return out;
  }
  std::vector<std::string> names() const;
  bool empty() const { return map_.empty(); }

  TensorMap to(const torch::Device& device) const;
  // Rows `index` of every tensor whose leading dimension equals `batch_size`.
  TensorMap index_rows(const torch::Tensor& index, int64_t batch_size) const;
  // Concatenates along dim 0 field by field.
  static TensorMap cat(const std::vector<TensorMap>& parts);

  auto begin() const { return map_.begin(); }
  auto end() const { return map_.end(); }

 private:
  std::map<std::string, torch::Tensor> map_;
};

using Batch = TensorMap;
using Conditioning = TensorMap;

}  // namespace flowkit
