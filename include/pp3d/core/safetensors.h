// safetensors files (Hugging Face's format): an 8-byte little-endian header
// length, a JSON header {name: {dtype, shape, data_offsets}, "__metadata__": …},
// then the raw little-endian tensor bytes. pp3d writes F32; it reads F32, BF16
// and F16 (converted to f32 exactly). Host memory only; no thread-safety needed
// (plain functions).
#pragma once

#include <cstdint>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "pp3d/core/parameter.h"
#include "pp3d/core/tensor.h"

namespace pp3d {

struct SafeTensor {
  std::string name;
  Shape shape;
  std::vector<float> data;  // row-major, shape_numel(shape) values
};

// Writes `tensors` in the given order as F32, metadata {"format": "pt",
// "producer": "pp3d"}, data 8-byte aligned. Throws pp3d::Error on I/O errors,
// repeated names or a data size that does not match its shape.
void write_safetensors(const std::string& path, const std::vector<SafeTensor>& tensors);

// Reads every tensor of the file. Throws pp3d::Error naming the file (and
// tensor) for a missing file, a malformed header, an unsupported dtype or
// data offsets outside the file.
std::map<std::string, SafeTensor> read_safetensors(const std::string& path);

// Loading model parameters by name (a parameter named N reads tensor N).
struct SafetensorsLoadOptions {
  // Parameters whose first dimension is a padded vocabulary: the file holds
  // its first `vocab_rows` rows only, and the padding rows are set to 0.
  std::set<std::string> vocab_padded;
  int64_t vocab_rows = 0;
};
// `path`: a .safetensors file, or a directory holding model.safetensors or
// model.safetensors.index.json ({"weight_map": {tensor: file}}, Hugging Face's
// sharded checkpoints). Each parameter reads only the bytes of the slice its
// ShardSpec holds (any TP shard, segments included), so a rank of a large
// model never holds the full file; F32 / BF16 / F16 are converted to f32 then
// to the parameter's dtype. pp3d::UserError naming the file and tensor for a
// missing tensor, a shape other than the parameter's global shape, an
// unsupported dtype, a truncated file or a corrupt header or index.
void load_safetensors_parameters(const std::string& path, const std::vector<Parameter*>& params,
                                 const SafetensorsLoadOptions& options = {});

}  // namespace pp3d
