#include "io/safetensors.h"

#include <fstream>
#include <sstream>

#include "common/error.h"
#include "io/atomic_file.h"

namespace tdpo::io {

at::ScalarType parse_dtype(const std::string& d) {
  if (d == "F32") return at::kFloat;
  if (d == "F16") return at::kHalf;
  if (d == "BF16") return at::kBFloat16;
  throw range_error("ERR_TDPO_CHECKPOINT", "tensor dtype '" + d + "' is not supported (F32, F16, BF16)");
}

const char* dtype_name(at::ScalarType t) {
  switch (t) {
    case at::kFloat: return "F32";
    case at::kHalf: return "F16";
    case at::kBFloat16: return "BF16";
    default: throw Error(ErrorKind::Generic, "ERR_TDPO_NATIVE", "no safetensors dtype for this tensor");
  }
}

at::Tensor read_tensor(const TensorSource& src) {
  const at::ScalarType type = parse_dtype(src.dtype);
  at::Tensor t = at::empty(src.shape, at::TensorOptions().dtype(type));
  if (t.numel() * static_cast<int64_t>(t.element_size()) != src.bytes) {
    throw range_error("ERR_TDPO_CHECKPOINT", "tensor '" + src.name + "' in " + src.file +
                                                 ": its byte length does not match its shape and dtype");
  }
  std::ifstream in(src.file, std::ios::binary);
  if (!in) throw range_error("ERR_TDPO_CHECKPOINT", "cannot open " + src.file);
  in.seekg(src.offset);
  in.read(static_cast<char*>(t.data_ptr()), src.bytes);
  if (in.gcount() != src.bytes) {
    throw range_error("ERR_TDPO_CHECKPOINT", "tensor '" + src.name + "' in " + src.file +
                                                 " ends past the end of the file (truncated?)");
  }
  return t;
}

void write_safetensors(const std::string& path,
                       const std::vector<std::pair<std::string, at::Tensor>>& tensors) {
  std::vector<at::Tensor> data;
  std::ostringstream header;
  header << "{\"__metadata__\":{\"format\":\"pt\"}";
  int64_t offset = 0;
  for (const auto& [name, tensor] : tensors) {
    at::Tensor t = tensor.detach().to(at::kCPU).contiguous();
    const int64_t bytes = t.numel() * static_cast<int64_t>(t.element_size());
    header << ",\"" << name << "\":{\"dtype\":\"" << dtype_name(t.scalar_type()) << "\",\"shape\":[";
    for (int64_t i = 0; i < t.dim(); ++i) header << (i ? "," : "") << t.size(i);
    header << "],\"data_offsets\":[" << offset << "," << offset + bytes << "]}";
    offset += bytes;
    data.push_back(t);
  }
  header << "}";
  std::string h = header.str();
  h.append((8 - h.size() % 8) % 8, ' ');  // keep the data 8-byte aligned, as the format suggests
  write_file_atomically(path, [&](FileSink& out) {
    const uint64_t n = h.size();
    unsigned char len[8];
    for (int i = 0; i < 8; ++i) len[i] = static_cast<unsigned char>(n >> (8 * i));
    out.write(len, 8);
    out.write(h.data(), h.size());
    for (const auto& t : data) out.write(t.data_ptr(), t.numel() * static_cast<size_t>(t.element_size()));
  });
}

}  // namespace tdpo::io
