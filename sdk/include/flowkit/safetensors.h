// flowkit/safetensors.h — a name→tensor dictionary in the safetensors format
// (huggingface/safetensors): an 8-byte little-endian header length, a JSON header
// {name: {"dtype", "shape", "data_offsets": [begin, end]}, "__metadata__": {str: str}}
// padded with spaces to a multiple of 8 bytes, then the tensors' bytes back to back.
#pragma once
#include <map>
#include <string>

#include "flowkit/tensor_file.h"

namespace flowkit::io {

using TensorMetadata = std::map<std::string, std::string>;

// Writes `tensors` (moved to the CPU, contiguous, in order) atomically to `path`. Dtypes:
// float64/32/16, bfloat16, int64/32/16/8, uint8, bool.
void write_safetensors(const std::string& path, const TensorDict& tensors, const TensorMetadata& metadata = {});
// Reads and checks a safetensors file: header length and JSON, known dtypes, each tensor's
// byte range matching its shape, ranges inside the buffer without overlaps or gaps. Anything
// else throws flowkit::Error naming the file (and the tensor). *metadata gets __metadata__.
TensorDict read_safetensors(const std::string& path, TensorMetadata* metadata = nullptr);
TensorDict parse_safetensors(const std::string& bytes, const std::string& path, TensorMetadata* metadata = nullptr);

// A weights file by its content: safetensors, or torch.save's zip archive (read_tensor_dict).
TensorDict read_weights_file(const std::string& path);

}  // namespace flowkit::io
