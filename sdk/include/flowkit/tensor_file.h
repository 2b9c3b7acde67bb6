// flowkit/tensor_file.h — a name→tensor dictionary stored as a pickle that Python's
// torch.load reads (and writes: torch.save of a dict of tensors), e.g. weights.pt.
#pragma once
#include <torch/torch.h>

#include <string>
#include <utility>
#include <vector>

namespace flowkit::io {

// In file order (a model's parameters in module order, as state_dict() lists them).
using TensorDict = std::vector<std::pair<std::string, torch::Tensor>>;
// The entry `name`, or nullptr.
const torch::Tensor* find_tensor(const TensorDict& tensors, const std::string& name);

// Writes `tensors` (moved to the CPU) atomically to `path`.
void write_tensor_dict(const std::string& path, const TensorDict& tensors);
// Reads a file written by write_tensor_dict or by torch.save({name: tensor}) — without
// LibTorch's unpickler, which corrupts memory on crafted files: like torch.load(weights_only=True)
// it builds tensors and nothing else. Anything else (not an archive, a pickle of something
// other than a str→tensor dict, a truncated or damaged file) throws flowkit::Error naming the file.
TensorDict read_tensor_dict(const std::string& path);
// The same from the file's bytes; `path` names it in errors.
TensorDict parse_tensor_dict(const std::string& bytes, const std::string& path);

}  // namespace flowkit::io
