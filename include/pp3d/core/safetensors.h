// safetensors files (Hugging Face's format): an 8-byte little-endian header
// length, a JSON header {name: {dtype, shape, data_offsets}, "__metadata__": …},
// then the raw little-endian tensor bytes. pp3d writes F32; it reads F32, BF16
// and F16 (converted to f32 exactly). Host memory only; no thread-safety needed
// (plain functions).
#pragma once

#include <map>
#include <string>
#include <vector>

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

}  // namespace pp3d
