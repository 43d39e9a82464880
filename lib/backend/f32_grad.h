// 16-bit parameter gradients (GptOptions::grad_dtype, --grad-dtype param), shared by
// the CPU and CUDA backends (internal header) so both round the same way.
#pragma once

#include "pp3d/backend/backend.h"

namespace pp3d::detail {

// Runs fn(g32) on an f32 tensor g32 holding g's values (g itself when g is f32),
// then rounds g32 back into g (nearest even). So a 16-bit gradient receives exactly
// round(g + the f32 op's contribution): "accumulated through f32 and rounded after
// each op's contribution". The caller checks that g is a float tensor on be's device.
template <typename Fn>
void through_f32(Backend& be, Tensor& g, Fn&& fn) {
  if (g.dtype() == DType::F32) {
    fn(g);
    return;
  }
  Tensor g32 = Tensor::empty(g.shape(), DType::F32, g.device(), MemCategory::Workspace);
  be.cast(g, g32);
  fn(g32);
  be.cast(g32, g);
}

}  // namespace pp3d::detail
