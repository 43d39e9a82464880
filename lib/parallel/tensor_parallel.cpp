// ColumnParallelLinear / RowParallelLinear forward and backward (see tensor_parallel.h).
#include "pp3d/parallel/tensor_parallel.h"

#include "parallel/tp_detail.h"
#include "pp3d/core/error.h"

namespace pp3d {

using detail::take_middle_block;
using detail::with_last_dim;

namespace {

Tensor activation(Backend& be, const Shape& shape) {
  return Tensor::empty(shape, DType::F32, be.device(), MemCategory::Activations);
}

Tensor activation16(Backend& be, const Shape& shape, DType dt) {
  return Tensor::empty(shape, dt, be.device(), MemCategory::Activations);
}

void check_input(const Tensor& x, int64_t features, const char* what) {
  PP3D_CHECK(x.defined() && x.dim() >= 1 && x.size(-1) == features, "{}: input must be [..., {}], got {}", what,
             features, x.defined() ? x.str() : std::string("undefined"));
}

void check_weight(const Parameter* w, const Parameter* b, int64_t bias_len, const char* what) {
  PP3D_CHECK(w != nullptr && w->value.defined() && w->value.dim() == 2, "{}: weight must be a 2-D parameter", what);
  PP3D_CHECK(b == nullptr || (b->value.defined() && b->value.numel() == bias_len),
             "{} '{}': bias must hold {} values, got {}", what, w->name, bias_len,
             b && b->value.defined() ? b->value.str() : std::string("undefined"));
}

// This rank's in/tp feature columns of a replicated x [..., in].
Tensor local_columns(Backend& be, Communicator* tp, const Tensor& x, int64_t in_local) {
  const int n = tp_world(tp);
  if (n == 1) return x;
  check_input(x, in_local * n, "RowParallelLinear (input_is_parallel = false)");
  const int64_t rows = x.numel() / (in_local * n);
  return take_middle_block(be, x, rows, n, in_local, tp->rank()).reshape(with_last_dim(x.shape(), in_local));
}

// All-gathers y_local [..., f] over the group into [..., f * tp] (feature blocks in rank order).
Tensor gather_features(Backend& be, Communicator* tp, const Tensor& y_local) {
  const int n = tp_world(tp);
  if (n == 1) return y_local;
  const int64_t f = y_local.size(-1), rows = y_local.numel() / f;
  Tensor buf = Tensor::empty({n, rows, f}, y_local.dtype(), be.device(), MemCategory::Comm);
  tp->all_gather(y_local, buf);
  return detail::swap_leading_dims(be, buf, n, rows, f, with_last_dim(y_local.shape(), f * n));
}

// A layer's GEMM with operands as stored (gemm_dtype F32) or rounded to 16 bits (Backend::gemm16).
void linear_gemm(Backend& be, DType gemm_dtype, bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k,
                 const Tensor& a, const Tensor& b, float beta, Tensor& c) {
  if (gemm_dtype == DType::F32) be.gemm(trans_a, trans_b, m, n, k, 1.0f, a, b, beta, c);
  else be.gemm16(gemm_dtype, trans_a, trans_b, m, n, k, 1.0f, a, b, beta, c);
}

// 16-bit activation flow (Options::output16 / grad16): t rounded to dt once
// (a new Activations tensor), or t itself when it already has dtype dt.
Tensor to16(Backend& be, const Tensor& t, DType dt) {
  if (t.dtype() == dt) return t;
  Tensor out = Tensor::empty(t.shape(), dt, be.device(), MemCategory::Activations);
  be.cast(t, out);
  return out;
}

void check_io16(DType gemm_dtype, bool output16, bool grad16, const Parameter* w, const char* what) {
  PP3D_CHECK(!(output16 || grad16) || gemm_dtype != DType::F32,
             "{} '{}': output16 / grad16 need a 16-bit gemm_dtype (bf16 or f16)", what, w->name);
}

void check_gemm_dtype(DType gemm_dtype, const Parameter* w, const char* what) {
  const DType wt = w->value.dtype();
  PP3D_CHECK(gemm_dtype == DType::F32 || ((gemm_dtype == DType::BF16 || gemm_dtype == DType::F16) &&
                                          (wt == DType::F32 || wt == gemm_dtype)),
             "{} '{}': gemm_dtype must be f32, or bf16 / f16 with a weight of f32 or that dtype, got {} with a {} "
             "weight",
             what, w->name, dtype_name(gemm_dtype), dtype_name(wt));
}

// grad(w) += dy^T . x, grad(b) += colsum(dy) now, or later when `defer` is given.
void weight_grad(Backend& be, Parameter* w, Parameter* b, const Tensor& dy, const Tensor& x, DType gemm_dtype,
                 std::vector<LinearWeightGrad>* defer) {
  LinearWeightGrad job{w, b, dy, x, gemm_dtype};
  if (defer != nullptr) {
    defer->push_back(std::move(job));
    return;
  }
  job.run(be);
}

}  // namespace

void LinearWeightGrad::run(Backend& be) {
  PP3D_CHECK(weight != nullptr && dy.defined() && x.defined(), "LinearWeightGrad::run: empty or already run");
  const int64_t out = weight->value.size(0), in = weight->value.size(1), rows = x.numel() / in;
  linear_gemm(be, gemm_dtype, true, false, out, in, rows, dy, x, 1.0f, weight->grad);
  if (bias != nullptr) be.bias_grad(dy, bias->grad);
  dy = x = Tensor();
}

// ---- ColumnParallelLinear ---------------------------------------------------------

ColumnParallelLinear::ColumnParallelLinear(Parameter& weight, Parameter* bias, Options options)
    : w_(&weight), b_(bias), opts_(options) {
  check_weight(w_, b_, weight.value.dim() == 2 ? weight.value.size(0) : 0, "ColumnParallelLinear");
  check_gemm_dtype(opts_.gemm_dtype, w_, "ColumnParallelLinear");
  check_io16(opts_.gemm_dtype, opts_.output16, opts_.grad16, w_, "ColumnParallelLinear");
}

Tensor ColumnParallelLinear::forward(Backend& be, Communicator* tp, const Tensor& x) const {
  const int64_t out_l = w_->value.size(0), in = w_->value.size(1);
  check_input(x, in, "ColumnParallelLinear::forward");
  const Tensor X = opts_.sequence_parallel ? sequence_all_gather(be, tp, x) : x;
  const int64_t rows = X.numel() / in;
  if (opts_.output16) {  // GEMM + bias rounded once (cuBLASLt bias epilogue on CUDA)
    Tensor y = activation16(be, with_last_dim(X.shape(), out_l), opts_.gemm_dtype);
    be.linear16_forward(opts_.gemm_dtype, rows, out_l, in, X, w_->value, b_ ? b_->value : Tensor(), y);
    return opts_.gather_output ? gather_features(be, tp, y) : y;
  }
  Tensor y = activation(be, with_last_dim(X.shape(), out_l));
  linear_gemm(be, opts_.gemm_dtype, false, true, rows, out_l, in, X, w_->value, 0.0f, y);
  if (b_ != nullptr) {
    Tensor y2 = y.reshape({rows, out_l});
    be.bias_add(y2, value_as_f32(be, b_->value));  // 16-bit parameters: f32 copy
  }
  return opts_.gather_output ? gather_features(be, tp, y) : y;
}

Tensor ColumnParallelLinear::forward_gelu(Backend& be, Communicator* tp, const Tensor& x, Tensor& pre) const {
  PP3D_CHECK(opts_.output16 && !opts_.gather_output,
             "ColumnParallelLinear '{}': forward_gelu needs output16 and no gather_output", w_->name);
  const int64_t out_l = w_->value.size(0), in = w_->value.size(1);
  check_input(x, in, "ColumnParallelLinear::forward_gelu");
  const Tensor X = opts_.sequence_parallel ? sequence_all_gather(be, tp, x) : x;
  const int64_t rows = X.numel() / in;
  const Shape shape = with_last_dim(X.shape(), out_l);
  pre = activation16(be, shape, opts_.gemm_dtype);
  Tensor y = activation16(be, shape, opts_.gemm_dtype);
  be.linear16_gelu_forward(opts_.gemm_dtype, rows, out_l, in, X, w_->value, b_ ? b_->value : Tensor(), pre, y);
  return y;
}

Tensor ColumnParallelLinear::backward(Backend& be, Communicator* tp, const Tensor& dy, const Tensor& x,
                                      bool input_grad, std::vector<LinearWeightGrad>* defer_weight) const {
  const int n = tp_world(tp);
  const int64_t out_l = w_->value.size(0), in = w_->value.size(1);
  check_input(x, in, "ColumnParallelLinear::backward (x)");
  // Sequence parallelism keeps only the local slice: gather it again.
  const Tensor X = opts_.sequence_parallel ? sequence_all_gather(be, tp, x) : x;
  const int64_t rows = X.numel() / in;
  const int64_t dy_cols = opts_.gather_output ? out_l * n : out_l;
  PP3D_CHECK(dy.defined() && dy.numel() == rows * dy_cols,
             "ColumnParallelLinear::backward '{}': dy must hold [{}, {}], got {}", w_->name, rows, dy_cols,
             dy.defined() ? dy.str() : std::string("undefined"));
  const Tensor dy_in = opts_.grad16 ? to16(be, dy, opts_.gemm_dtype) : dy;
  const Tensor dyl = (opts_.gather_output && n > 1) ? take_middle_block(be, dy_in, rows, n, out_l, tp->rank())
                                                    : dy_in.reshape({rows, out_l});
  weight_grad(be, w_, b_, dyl, X, opts_.gemm_dtype, defer_weight);
  if (!input_grad) return Tensor();
  Tensor dx = activation(be, X.shape());
  linear_gemm(be, opts_.gemm_dtype, false, false, rows, in, out_l, dyl, w_->value, 0.0f, dx);
  // "f" backward: every rank holds a partial dx (its output columns only); reduced in f32.
  if (opts_.sequence_parallel) {
    dx = sequence_reduce_scatter(be, tp, dx);
  } else if (n > 1) {
    tp->all_reduce(dx);
  }
  return opts_.grad16 ? to16(be, dx, opts_.gemm_dtype) : dx;
}

// ---- RowParallelLinear ------------------------------------------------------------

RowParallelLinear::RowParallelLinear(Parameter& weight, Parameter* bias, Options options)
    : w_(&weight), b_(bias), opts_(options) {
  check_weight(w_, b_, weight.value.dim() == 2 ? weight.value.size(0) : 0, "RowParallelLinear");
  check_gemm_dtype(opts_.gemm_dtype, w_, "RowParallelLinear");
  check_io16(opts_.gemm_dtype, opts_.output16, opts_.grad16, w_, "RowParallelLinear");
  PP3D_CHECK(!opts_.sequence_parallel || opts_.input_is_parallel,
             "RowParallelLinear '{}': sequence_parallel needs input_is_parallel", weight.name);
}

Tensor RowParallelLinear::forward(Backend& be, Communicator* tp, const Tensor& x) const {
  const int n = tp_world(tp);
  const int64_t out = w_->value.size(0), in_l = w_->value.size(1);
  const Tensor xl = opts_.input_is_parallel ? x : local_columns(be, tp, x, in_l);
  check_input(xl, in_l, "RowParallelLinear::forward");
  const int64_t rows = xl.numel() / in_l;
  if (opts_.output16 && n == 1) {  // no partial sums to reduce first: bias fused as in ColumnParallelLinear
    Tensor y16 = activation16(be, with_last_dim(xl.shape(), out), opts_.gemm_dtype);
    be.linear16_forward(opts_.gemm_dtype, rows, out, in_l, xl, w_->value, b_ ? b_->value : Tensor(), y16);
    return y16;
  }
  Tensor y = activation(be, with_last_dim(xl.shape(), out));
  linear_gemm(be, opts_.gemm_dtype, false, true, rows, out, in_l, xl, w_->value, 0.0f, y);
  // "g" forward: sum the partial products (reduce-scatter to the local tokens with SP).
  if (opts_.sequence_parallel) {
    y = sequence_reduce_scatter(be, tp, y);
  } else if (n > 1) {
    tp->all_reduce(y);
  }
  if (b_ != nullptr) {
    Tensor y2 = y.reshape({y.numel() / out, out});
    be.bias_add(y2, value_as_f32(be, b_->value));  // 16-bit parameters: f32 copy
  }
  return opts_.output16 ? to16(be, y, opts_.gemm_dtype) : y;
}

Tensor RowParallelLinear::backward(Backend& be, Communicator* tp, const Tensor& dy, const Tensor& x,
                                   bool input_grad, std::vector<LinearWeightGrad>* defer_weight) const {
  return backward_impl(be, tp, dy, x, input_grad, defer_weight, Tensor());
}

Tensor RowParallelLinear::backward_dgelu(Backend& be, Communicator* tp, const Tensor& dy, const Tensor& x,
                                         const Tensor& pre, std::vector<LinearWeightGrad>* defer_weight) const {
  PP3D_CHECK(opts_.grad16 && opts_.input_is_parallel,
             "RowParallelLinear '{}': backward_dgelu needs grad16 and input_is_parallel", w_->name);
  PP3D_CHECK(pre.defined() && x.defined() && pre.shape() == x.shape(),
             "RowParallelLinear::backward_dgelu '{}': pre must have x's shape {}, got {}", w_->name,
             x.defined() ? shape_str(x.shape()) : std::string("undefined"),
             pre.defined() ? pre.str() : std::string("undefined"));
  return backward_impl(be, tp, dy, x, true, defer_weight, pre);
}

Tensor RowParallelLinear::backward_impl(Backend& be, Communicator* tp, const Tensor& dy, const Tensor& x,
                                        bool input_grad, std::vector<LinearWeightGrad>* defer_weight,
                                        const Tensor& gelu_pre) const {
  const int64_t out = w_->value.size(0), in_l = w_->value.size(1);
  const Tensor xl = opts_.input_is_parallel ? x : local_columns(be, tp, x, in_l);
  check_input(xl, in_l, "RowParallelLinear::backward (x)");
  const int64_t rows = xl.numel() / in_l;
  const Tensor dy_in = opts_.grad16 ? to16(be, dy, opts_.gemm_dtype) : dy;
  const Tensor dY = opts_.sequence_parallel ? sequence_all_gather(be, tp, dy_in) : dy_in;
  PP3D_CHECK(dY.defined() && dY.numel() == rows * out,
             "RowParallelLinear::backward '{}': dy must hold [{}, {}]{}, got {}", w_->name, rows, out,
             opts_.sequence_parallel ? " after the sequence all-gather" : "",
             dy.defined() ? dy.str() : std::string("undefined"));
  const Tensor dy2 = dY.reshape({rows, out});
  weight_grad(be, w_, b_, dy2, xl, opts_.gemm_dtype, defer_weight);
  if (!input_grad) return Tensor();
  if (gelu_pre.defined()) {  // backward_dgelu: x is local (input_is_parallel), no gather
    Tensor dpre = activation16(be, xl.shape(), opts_.gemm_dtype);
    be.linear16_dgelu_backward(opts_.gemm_dtype, rows, out, in_l, dy2, w_->value, gelu_pre, dpre);
    return dpre;
  }
  Tensor dxl = activation(be, xl.shape());
  linear_gemm(be, opts_.gemm_dtype, false, false, rows, in_l, out, dy2, w_->value, 0.0f, dxl);
  if (opts_.grad16) dxl = to16(be, dxl, opts_.gemm_dtype);
  return opts_.input_is_parallel ? dxl : gather_features(be, tp, dxl);
}

}  // namespace pp3d
