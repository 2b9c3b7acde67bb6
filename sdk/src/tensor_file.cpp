// Name→tensor dictionaries in torch.save's format (torch::pickle_save / pickle_load).
#include "flowkit/tensor_file.h"

#include <fstream>
#include <sstream>

#include "flowkit/error.h"
#include "flowkit/io.h"

namespace flowkit::io {

const torch::Tensor* find_tensor(const TensorDict& tensors, const std::string& name) {
  for (const auto& [key, t] : tensors)
    if (key == name) return &t;
  return nullptr;
}

void write_tensor_dict(const std::string& path, const TensorDict& tensors) {
  c10::Dict<std::string, torch::Tensor> dict;
  // A copy of each: a view (of a flat parameter buffer, say) would pickle its whole storage.
  for (const auto& [name, t] : tensors) dict.insert(name, t.detach().cpu().clone(at::MemoryFormat::Contiguous));
  std::vector<char> bytes = torch::pickle_save(c10::IValue(dict));
  write_file_atomic(path, std::string(bytes.begin(), bytes.end()));
}

TensorDict read_tensor_dict(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw Error("cannot open '" + path + "'");
  std::stringstream bytes;
  bytes << in.rdbuf();
  return parse_tensor_dict(bytes.str(), path);
}

TensorDict parse_tensor_dict(const std::string& bytes, const std::string& path) {
  c10::IValue value;
  try {
    value = torch::pickle_load(std::vector<char>(bytes.begin(), bytes.end()));
  } catch (const std::exception& e) {
    std::string what = e.what();
    throw Error("'" + path + "' is not a readable tensor file (torch.save format): " + what.substr(0, what.find('\n')));
  }
  if (!value.isGenericDict()) throw Error("'" + path + "' holds a " + value.tagKind() + ", not a dictionary of tensors");
  TensorDict out;
  for (const auto& entry : value.toGenericDict()) {
    if (!entry.key().isString()) throw Error("'" + path + "': a key is a " + entry.key().tagKind() + ", not a name");
    const std::string name = entry.key().toStringRef();
    if (!entry.value().isTensor()) throw Error("'" + path + "': '" + name + "' is a " + entry.value().tagKind() + ", not a tensor");
    if (find_tensor(out, name)) throw Error("'" + path + "': '" + name + "' appears twice");
    out.emplace_back(name, entry.value().toTensor());
  }
  return out;
}

}  // namespace flowkit::io
