// safetensors data: reading tensors whose place in a file is already known (the header is parsed
// and validated in TypeScript, lib/io/safetensors.ts, where JSON is native), and writing whole
// files, atomically.
#pragma once

#include <ATen/ATen.h>

#include <string>
#include <utility>
#include <vector>

namespace tdpo::io {

// One tensor of a safetensors file: absolute byte offset of its data and its length.
struct TensorSource {
  std::string name, file, dtype;  // dtype: "F32", "F16" or "BF16"
  std::vector<int64_t> shape;
  int64_t offset = 0, bytes = 0;
};

at::ScalarType parse_dtype(const std::string& dtype);  // throws ERR_TDPO_CHECKPOINT
const char* dtype_name(at::ScalarType t);

// Reads the tensor's bytes (throws ERR_TDPO_CHECKPOINT on a short read: a truncated file).
at::Tensor read_tensor(const TensorSource& src);

// Writes `path` (header, then the tensors' data in order) through a temporary file and a rename,
// so a crash never leaves a half-written file under the final name.
void write_safetensors(const std::string& path,
                       const std::vector<std::pair<std::string, at::Tensor>>& tensors);

}  // namespace tdpo::io
