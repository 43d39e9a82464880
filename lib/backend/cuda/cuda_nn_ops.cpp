// CudaBackend: LayerNorm, GELU, embedding, cross-entropy and AdamW (attention: cuda_attention.cpp).
// Argument checks match CpuBackend's; the math (and its determinism) is described
// at the top of each kernel file: kernels/{layernorm,gelu,attention,embedding,xent,adamw}.cu.
#include <cmath>

#include "backend/cuda/cuda_backend.h"
#include "backend/cuda/cuda_check.h"
#include "backend/f32_grad.h"
#include "backend/op_checks.h"
#include "launchers.h"
#include "pp3d/core/error.h"

namespace pp3d {

using detail::check_len;
using detail::check_rows;
using detail::ln_rows;
using detail::xent_rows;

// ---- LayerNorm ----------------------------------------------------------------

void CudaBackend::layernorm_forward(const Tensor& x, const Tensor& weight, const Tensor& bias, Tensor& y,
                                    Tensor& mean, Tensor& rstd, float eps) {
  const auto dev_check = [this](const Tensor& t, DType dt, const char* what) { check(t, dt, what); };
  const int64_t rows = detail::check_layernorm_forward(dev_check, x, weight, bias, y, mean, rstd, eps);
  const int64_t n = weight.numel();
  // x, y f32/bf16/f16 (16-bit activations): read and written in their dtype, f32 math.
  PP3D_CHECK_CUDA(kernels::layernorm_forward(y.raw(), static_cast<int>(y.dtype()), mean.data<float>(),
                                             rstd.data<float>(), x.raw(), static_cast<int>(x.dtype()),
                                             weight.data<float>(), bias.data<float>(), rows, n, eps, stream_));
}

void CudaBackend::layernorm_backward(const Tensor& dy, const Tensor& x, const Tensor& weight, const Tensor& mean,
                                     const Tensor& rstd, Tensor& dx, Tensor& dweight, Tensor& dbias) {
  // dweight / dbias may be 16-bit (--grad-dtype param; the kernel adds the f32 sums and
  // rounds once): the shared check's f32 rule applies to every other tensor.
  check_float(dweight, "layernorm_backward: dweight");
  check_float(dbias, "layernorm_backward: dbias");
  const auto dev_check = [&](const Tensor& t, DType dt, const char* what) {
    if (&t == &dweight || &t == &dbias) return;
    check(t, dt, what);
  };
  const int64_t rows = detail::check_layernorm_backward(dev_check, dy, x, weight, mean, rstd, dx, dweight, dbias);
  const int64_t n = weight.numel();
  if (rows == 0) return;
  auto* partial = static_cast<float*>(
      scratch(0, static_cast<std::size_t>(kernels::layernorm_backward_chunks(rows) * 2 * n) * sizeof(float)));
  PP3D_CHECK_CUDA(kernels::layernorm_backward(
      dx.raw(), static_cast<int>(dx.dtype()), dweight.raw(), static_cast<int>(dweight.dtype()), dbias.raw(),
      static_cast<int>(dbias.dtype()), dy.raw(), static_cast<int>(dy.dtype()), x.raw(), static_cast<int>(x.dtype()),
      weight.data<float>(), mean.data<float>(), rstd.data<float>(), rows, n, partial, stream_));
}

// ---- GELU -------------------------------------------------------------------------

void CudaBackend::gelu_forward(const Tensor& x, Tensor& y) {
  const auto dev_check = [this](const Tensor& t, DType dt, const char* what) { check(t, dt, what); };
  detail::check_act(dev_check, x, "gelu_forward: x");
  detail::check_act(dev_check, y, "gelu_forward: y");
  check_same_numel(x, y, "gelu_forward: y");
  if (x.dtype() != DType::F32 || y.dtype() != DType::F32) {  // 16-bit activations
    PP3D_CHECK_CUDA(kernels::gelu_forward_typed(y.raw(), static_cast<int>(y.dtype()), x.raw(),
                                                static_cast<int>(x.dtype()), x.numel(), stream_));
    return;
  }
  PP3D_CHECK_CUDA(kernels::gelu_forward(y.data<float>(), x.data<float>(), x.numel(), stream_));
}

void CudaBackend::gelu_backward(const Tensor& x, const Tensor& dy, Tensor& dx) {
  const auto dev_check = [this](const Tensor& t, DType dt, const char* what) { check(t, dt, what); };
  detail::check_act(dev_check, x, "gelu_backward: x");
  detail::check_act(dev_check, dy, "gelu_backward: dy");
  detail::check_act(dev_check, dx, "gelu_backward: dx");
  check_same_numel(x, dy, "gelu_backward: dy");
  check_same_numel(x, dx, "gelu_backward: dx");
  if (x.dtype() != DType::F32 || dy.dtype() != DType::F32 || dx.dtype() != DType::F32) {  // 16-bit activations
    PP3D_CHECK_CUDA(kernels::gelu_backward_typed(dx.raw(), static_cast<int>(dx.dtype()), x.raw(),
                                                 static_cast<int>(x.dtype()), dy.raw(), static_cast<int>(dy.dtype()),
                                                 x.numel(), stream_));
    return;
  }
  PP3D_CHECK_CUDA(kernels::gelu_backward(dx.data<float>(), x.data<float>(), dy.data<float>(), x.numel(), stream_));
}

// ---- embedding -------------------------------------------------------------------


void CudaBackend::embedding_forward(const Tensor& ids, const Tensor& table, Tensor& out, int64_t id_offset,
                                    bool accumulate) {
  check(ids, DType::I32, "embedding_forward: ids");
  PP3D_CHECK(ids.dim() == 1, "embedding_forward: ids must be 1-d [N], got shape {}", shape_str(ids.shape()));
  check(table, DType::F32, "embedding_forward: table");
  check(out, DType::F32, "embedding_forward: out");
  PP3D_CHECK(table.dim() == 2, "embedding_forward: table must be [V_local, C], got {}", shape_str(table.shape()));
  const int64_t n = ids.numel(), v = table.size(0), c = table.size(1);
  check_rows(out, n, c, "embedding_forward: out");
  PP3D_CHECK_CUDA(kernels::embedding_forward(out.data<float>(), ids.data<int32_t>(), table.data<float>(), n, v, c,
                                             id_offset, accumulate, stream_));
}

void CudaBackend::embedding_backward(const Tensor& ids, const Tensor& dout, Tensor& dtable_out, int64_t id_offset) {
  // A 16-bit dtable (--grad-dtype param): accumulated into an f32 copy, rounded once.
  check_float(dtable_out, "embedding_backward: dtable");
  detail::through_f32(*this, dtable_out,
                      [&](Tensor& dtable) { embedding_backward_f32(ids, dout, dtable, id_offset); });
}

void CudaBackend::embedding_backward_f32(const Tensor& ids, const Tensor& dout, Tensor& dtable, int64_t id_offset) {
  check(ids, DType::I32, "embedding_backward: ids");
  PP3D_CHECK(ids.dim() == 1, "embedding_backward: ids must be 1-d [N], got shape {}", shape_str(ids.shape()));
  check(dout, DType::F32, "embedding_backward: dout");
  check(dtable, DType::F32, "embedding_backward: dtable");
  PP3D_CHECK(dtable.dim() == 2, "embedding_backward: dtable must be [V_local, C], got {}",
             shape_str(dtable.shape()));
  const int64_t n = ids.numel(), v = dtable.size(0), c = dtable.size(1);
  check_rows(dout, n, c, "embedding_backward: dout");
  PP3D_CHECK_CUDA(kernels::embedding_backward(dtable.data<float>(), ids.data<int32_t>(), dout.data<float>(), n, v, c,
                                              id_offset, stream_));
}

// ---- cross-entropy over a vocabulary slice ---------------------------------------------


void CudaBackend::xent_stats(const Tensor& logits, const Tensor& targets, int64_t vocab_start, int64_t valid,
                             Tensor& local_max, Tensor& local_sumexp, Tensor& target_logit) {
  check(logits, DType::F32, "xent_stats: logits");
  check(targets, DType::I32, "xent_stats: targets");
  const int64_t n = xent_rows(logits, targets, valid, "xent_stats");
  check(local_max, DType::F32, "xent_stats: local_max");
  check(local_sumexp, DType::F32, "xent_stats: local_sumexp");
  check(target_logit, DType::F32, "xent_stats: target_logit");
  check_len(local_max, n, "xent_stats: local_max");
  check_len(local_sumexp, n, "xent_stats: local_sumexp");
  check_len(target_logit, n, "xent_stats: target_logit");
  PP3D_CHECK_CUDA(kernels::xent_stats(local_max.data<float>(), local_sumexp.data<float>(),
                                      target_logit.data<float>(), logits.data<float>(), targets.data<int32_t>(), n,
                                      logits.size(1), vocab_start, valid, stream_));
}

void CudaBackend::xent_backward(const Tensor& logits, const Tensor& targets, int64_t vocab_start, int64_t valid,
                                const Tensor& global_max, const Tensor& global_sumexp, float weight,
                                Tensor& dlogits) {
  check(logits, DType::F32, "xent_backward: logits");
  check(targets, DType::I32, "xent_backward: targets");
  check(dlogits, DType::F32, "xent_backward: dlogits");
  const int64_t n = xent_rows(logits, targets, valid, "xent_backward");
  check(global_max, DType::F32, "xent_backward: global_max");
  check(global_sumexp, DType::F32, "xent_backward: global_sumexp");
  check_len(global_max, n, "xent_backward: global_max");
  check_len(global_sumexp, n, "xent_backward: global_sumexp");
  check_shape(dlogits, logits.shape(), "xent_backward: dlogits");
  PP3D_CHECK_CUDA(kernels::xent_backward(dlogits.data<float>(), logits.data<float>(), targets.data<int32_t>(),
                                         global_max.data<float>(), global_sumexp.data<float>(), n, logits.size(1),
                                         vocab_start, valid, weight, stream_));
}

// ---- AdamW ---------------------------------------------------------------------------

void CudaBackend::adamw_step(Tensor& param, const Tensor& grad_in, Tensor& m, Tensor& v, Tensor& master,
                             const AdamWParams& p) {
  check_float(param, "adamw_step: param");
  check_float(grad_in, "adamw_step: grad");
  const Tensor grad = value_as_f32(*this, grad_in);  // 16-bit gradients (--grad-dtype param) read through f32
  check(m, DType::F32, "adamw_step: m");
  check(v, DType::F32, "adamw_step: v");
  check_same_numel(param, grad, "adamw_step: grad");
  check_same_numel(param, m, "adamw_step: m");
  check_same_numel(param, v, "adamw_step: v");
  const bool has_master = master.defined();
  if (has_master) {
    check(master, DType::F32, "adamw_step: master");
    check_same_numel(param, master, "adamw_step: master");
  } else {
    PP3D_CHECK(param.dtype() == DType::F32,
               "adamw_step: param is {}, a 16-bit param needs an f32 master copy (pass `master`)",
               dtype_name(param.dtype()));
  }
  PP3D_CHECK(p.step >= 1, "adamw_step: step must be >= 1 (1-based), got {}", p.step);
  PP3D_CHECK(p.beta1 >= 0.0f && p.beta1 < 1.0f && p.beta2 >= 0.0f && p.beta2 < 1.0f,
             "adamw_step: betas must lie in [0, 1), got beta1={} beta2={}", p.beta1, p.beta2);
  const double bc1 = 1.0 - std::pow(static_cast<double>(p.beta1), static_cast<double>(p.step));
  const double bc2 = 1.0 - std::pow(static_cast<double>(p.beta2), static_cast<double>(p.step));
  const kernels::AdamWArgs args{p.lr, p.beta1, p.beta2, p.eps, p.weight_decay, p.grad_scale,
                                static_cast<float>(1.0 / bc1), static_cast<float>(1.0 / bc2)};
  PP3D_CHECK_CUDA(kernels::adamw(param.raw(), static_cast<int>(param.dtype()),
                                 has_master ? master.data<float>() : nullptr, grad.data<float>(), m.data<float>(),
                                 v.data<float>(), param.numel(), args, stream_));
}

}  // namespace pp3d
