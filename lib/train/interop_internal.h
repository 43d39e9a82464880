// Helpers shared by the llm.c and safetensors interop files.
#pragma once

#include <vector>

#include "pp3d/core/tensor.h"
#include "pp3d/core/parameter.h"

namespace pp3d::detail {

// The parameter's (local) values as host f32, from any device / float dtype.
inline std::vector<float> host_values(const Parameter& p) {
  return p.value.device().is_cpu() ? p.value.to_vector() : p.value.to(Device::cpu()).to_vector();
}

// Writes host f32 `values` (local shape) into p.value (any device / float dtype).
inline void set_host_values(Parameter& p, const std::vector<float>& values) {
  Tensor host = Tensor::empty(p.value.shape(), p.value.dtype());
  host.fill_from(values);
  p.value.copy_from(host);
}

inline void check_unsharded(const Parameter& p, const char* what) {
  PP3D_CHECK(!p.shard.sharded() && p.value.shape() == p.global_shape,
             "{} needs whole tensors, but parameter '{}' is a shard ({} of {}); export from a tp=1, pp=1 model",
             what, p.name, shape_str(p.value.shape()), shape_str(p.global_shape));
}

}  // namespace pp3d::detail
