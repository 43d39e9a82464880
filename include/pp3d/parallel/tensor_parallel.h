// Megatron-style tensor parallelism: ColumnParallelLinear, RowParallelLinear
// and the sequence-parallel region conversions.
//
// A Linear layer y = x W^T + b (W [out, in], PyTorch convention) is split over
// the `tp` ranks of a tensor-parallel group:
//  - ColumnParallelLinear: W split by output features, each rank holds
//    [out/tp, in] and the matching bias slice [out/tp]. The input goes through
//    "f" (identity forward, all-reduce of dx backward); the output is this
//    rank's columns y[..., out/tp] or, with gather_output, all of y.
//  - RowParallelLinear: W split by input features, each rank holds
//    [out, in/tp]; the bias [out] is replicated. The partial products go
//    through "g" (all-reduce forward, identity backward); the bias is added
//    once, after the reduction.
//  - Sequence parallelism (Megatron-LM, Korthikanti et al. 2022): outside the
//    linear layers each rank holds only its block of T/tp tokens of every
//    sequence, [B, T/tp, C]. ColumnParallelLinear then all-gathers the
//    sequence before its GEMM (and re-gathers it in backward, so only the
//    local slice has to be kept), RowParallelLinear reduce-scatters its output
//    back to [B, T/tp, out] instead of all-reducing it.
//
// Layers hold non-owning pointers to their Parameters (value: the local shard,
// grad: accumulated +=, as every Backend parameter gradient). forward/backward
// are stateless: the caller keeps the input of forward and hands it to
// backward. `tp` may be nullptr (one rank: plain Linear, no communication).
// Outputs are new tensors charged to MemCategory::Activations. Every rank of
// the group must make the same calls in the same order (collectives). Not
// thread-safe: one thread per layer and communicator at a time.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "pp3d/backend/backend.h"
#include "pp3d/comm/communicator.h"
#include "pp3d/core/parameter.h"
#include "pp3d/parallel/module.h"

namespace pp3d {

// Number of ranks of a tensor-parallel group (1 for nullptr).
inline int tp_world(const Communicator* tp) { return tp ? tp->size() : 1; }

// ---- sequence-parallel regions ----------------------------------------------------
// Token layout: [B, T, C] row-major; rank r of the group holds tokens
// [r*T/tp, (r+1)*T/tp) of every sequence, i.e. a local [B, T/tp, C].

// x_local [B, T/tp, C] -> the full [B, T, C] on every rank (all-gather).
Tensor sequence_all_gather(Backend& be, Communicator* tp, const Tensor& x_local);
// y [B, T, C] holding partial sums -> this rank's [B, T/tp, C] of the sum over
// the group (reduce-scatter). Throws when T is not divisible by the group size.
Tensor sequence_reduce_scatter(Backend& be, Communicator* tp, const Tensor& y);
// x [B, T, C] (identical on every rank) -> this rank's [B, T/tp, C] (a copy,
// no communication). Throws when T is not divisible by the group size.
Tensor sequence_split(Backend& be, Communicator* tp, const Tensor& x);

// ---- parameters --------------------------------------------------------------------
// Shard of a column-parallel weight [out, in] (or its bias [out]): rows
// [r*out/tp, (r+1)*out/tp) of each of `segments` equal blocks (3 for fused q|k|v).
ShardSpec column_parallel_shard(int64_t out_features, int tp_rank, int tp_size, int64_t segments = 1);
// Shard of a row-parallel weight [out, in]: columns [r*in/tp, (r+1)*in/tp).
ShardSpec row_parallel_shard(int64_t in_features, int tp_rank, int tp_size);
// A Parameter holding `shard` of a global tensor, f32 on `device`, initialised
// layout-independently (make_initial_values with `seed`), zero gradient.
Parameter make_sharded_parameter(const std::string& name, const Shape& global, const ShardSpec& shard,
                                 const InitSpec& init, uint64_t seed, Device device = Device::cpu());

// ---- linear layers -----------------------------------------------------------------

// The weight-gradient part of a Linear backward, held back for later (split
// backward, zero-bubble pipeline schedules): grad(W) += dy^T . x and, with a
// bias, grad(b) += the column sums of dy. dy [rows, out_local] and x
// [rows, in_local] are exactly the GEMM operands of the fused backward (x
// already all-gathered with sequence parallelism), so run() adds bitwise what
// the fused backward would have added. Holds references to both until run().
struct LinearWeightGrad {
  Parameter* weight = nullptr;
  Parameter* bias = nullptr;
  Tensor dy, x;
  DType gemm_dtype = DType::F32;  // the layer's Options::gemm_dtype
  // Accumulates the gradients and releases dy and x.
  void run(Backend& be);
};

// A Layer whose split backward defers exactly its Linear weight-gradient GEMMs.
// The subclass writes its backward once, as backward_parts(dy, ctx, state,
// defer): with defer == nullptr (fused backward) the Linears accumulate their
// weight gradients in place; otherwise they append LinearWeightGrad parts to
// *defer (the state's `weight_grads`), which backward_weight runs later with
// the same operands, so input + weight parts equal the fused backward bitwise.
// `State` is the layer's LayerState type with a std::vector<LinearWeightGrad>
// weight_grads member.
template <class State>
class LinearSplitBackwardLayer : public Layer {
 public:
  Tensor backward(const Tensor& dy, MicroBatchContext& ctx, LayerState& saved) override {
    return backward_parts(dy, ctx, static_cast<State&>(saved), nullptr);
  }
  bool splits_backward() const override { return true; }
  Tensor backward_input(const Tensor& dy, MicroBatchContext& ctx, LayerState& saved) override {
    auto& s = static_cast<State&>(saved);
    return backward_parts(dy, ctx, s, &s.weight_grads);
  }
  void backward_weight(MicroBatchContext&, LayerState& saved) override {
    auto& s = static_cast<State&>(saved);
    for (LinearWeightGrad& w : s.weight_grads) w.run(weight_grad_backend());
    s.weight_grads.clear();
  }

 private:  // the subclass overrides these (privately is fine: only this base calls them)
  virtual Tensor backward_parts(const Tensor& dy, MicroBatchContext& ctx, State& s,
                                std::vector<LinearWeightGrad>* defer) = 0;
  virtual Backend& weight_grad_backend() = 0;
};

class ColumnParallelLinear {
 public:
  struct Options {
    bool gather_output = false;      // all-gather y to [..., out] (backward takes the local columns of dy)
    bool sequence_parallel = false;  // input is the local sequence slice [B, T/tp, in]
    // Operand dtype of the three GEMMs (y = x W^T, dx = dy W, dW += dy^T x): F32 (the
    // operands as stored, a 16-bit weight read through f32), or BF16 / F16 (Backend::gemm16:
    // x and dy rounded to 16 bits, f32 accumulation; tensor cores on CUDA). y and dx are f32
    // unless the two flags below ask for 16 bits.
    DType gemm_dtype = DType::F32;
    // 16-bit activation flow (GPT with compute_dtype param; need a 16-bit gemm_dtype):
    // output16: y is gemm_dtype, the f32 GEMM result plus the bias rounded once
    // (Backend::linear16_forward: the cuBLASLt bias epilogue on CUDA; RowParallelLinear
    // with TP > 1 adds the bias after the f32 all-reduce, then rounds; with gather_output
    // the gathered blocks are already 16-bit).
    // grad16: dy is rounded to gemm_dtype once on entry (the dx, dW and bias-gradient
    // operand) and dx is returned in gemm_dtype, rounded once after the TP reduction.
    bool output16 = false;
    bool grad16 = false;
  };

  // weight: local [out/tp, in]; bias: local [out/tp] or nullptr. Not owned.
  ColumnParallelLinear(Parameter& weight, Parameter* bias, Options options);
  ColumnParallelLinear(Parameter& weight, Parameter* bias) : ColumnParallelLinear(weight, bias, Options{}) {}

  // x: [..., in], identical on every rank; with sequence_parallel the local
  // slice [B, T/tp, in]. Returns y [..., out/tp] (leading dims [B, T] with
  // sequence_parallel), or [..., out] with gather_output.
  Tensor forward(Backend& be, Communicator* tp, const Tensor& x) const;
  // forward fused with a GELU after it (Backend::linear16_gelu_forward: the cuBLASLt
  // GELU_AUX_BIAS epilogue on CUDA): returns round(gelu(x W^T + b)), GELU of the f32 sum,
  // and sets `pre` to round(x W^T + b) (same shape: GELU backward's input, see
  // RowParallelLinear::backward_dgelu). Needs output16 and no gather_output. backward is
  // unchanged: its dy is then the gradient with respect to `pre`.
  Tensor forward_gelu(Backend& be, Communicator* tp, const Tensor& x, Tensor& pre) const;
  // dy: gradient of forward's output (same shape); x: forward's input.
  // Accumulates weight/bias gradients. Returns dx (shape of x): the sum over
  // the group of the local contributions (all-reduce; reduce-scatter with
  // sequence_parallel), or an undefined Tensor when input_grad is false.
  // With `defer_weight`, the weight/bias part is appended there instead of
  // run (split backward; the caller runs it later with LinearWeightGrad::run).
  Tensor backward(Backend& be, Communicator* tp, const Tensor& dy, const Tensor& x, bool input_grad = true,
                  std::vector<LinearWeightGrad>* defer_weight = nullptr) const;

  const Options& options() const { return opts_; }

 private:
  Parameter* w_;
  Parameter* b_;
  Options opts_;
};

class RowParallelLinear {
 public:
  struct Options {
    bool input_is_parallel = true;   // x holds this rank's in/tp features; false: the full x is split here
    bool sequence_parallel = false;  // output is the local sequence slice [B, T/tp, out] (needs input_is_parallel)
    DType gemm_dtype = DType::F32;   // as ColumnParallelLinear::Options::gemm_dtype
    // As ColumnParallelLinear::Options: y rounded once after the TP reduction and the bias;
    // dy rounded once on entry (before the sequence all-gather), dx in gemm_dtype.
    bool output16 = false;
    bool grad16 = false;
  };

  // weight: local [out, in/tp]; bias: full [out] (replicated) or nullptr. Not owned.
  RowParallelLinear(Parameter& weight, Parameter* bias, Options options);
  RowParallelLinear(Parameter& weight, Parameter* bias) : RowParallelLinear(weight, bias, Options{}) {}

  // x: [..., in/tp] (input_is_parallel) or [..., in]; 3-D [B, T, in/tp] with
  // sequence_parallel. Returns y = sum over ranks of x_r W_r^T, then + b:
  // [..., out] on every rank, or this rank's [B, T/tp, out] with sequence_parallel.
  Tensor forward(Backend& be, Communicator* tp, const Tensor& x) const;
  // dy: gradient of forward's output (same shape, identical on every rank
  // without sequence parallelism); x: forward's input. Accumulates weight and
  // bias gradients (the bias gradient is the full one on every rank, also
  // with sequence_parallel, where dy is all-gathered first). Returns dx
  // (shape of x; all-gathered when !input_is_parallel). `defer_weight` as in
  // ColumnParallelLinear::backward.
  Tensor backward(Backend& be, Communicator* tp, const Tensor& dy, const Tensor& x, bool input_grad = true,
                  std::vector<LinearWeightGrad>* defer_weight = nullptr) const;
  // backward for x = gelu(pre) (pre from ColumnParallelLinear::forward_gelu), its input
  // gradient fused with GELU's backward (Backend::linear16_dgelu_backward: the cuBLASLt
  // DGELU epilogue on CUDA): returns d(pre) = round((dy W)_f32 * gelu'(pre)) instead of
  // dx; the weight/bias part is unchanged (deferred with `defer_weight`). The input
  // gradient GEMM is local (no TP reduction), so this needs input_is_parallel and grad16.
  Tensor backward_dgelu(Backend& be, Communicator* tp, const Tensor& dy, const Tensor& x, const Tensor& pre,
                        std::vector<LinearWeightGrad>* defer_weight = nullptr) const;

  const Options& options() const { return opts_; }

 private:
  // backward's body; `gelu_pre` defined: backward_dgelu.
  Tensor backward_impl(Backend& be, Communicator* tp, const Tensor& dy, const Tensor& x, bool input_grad,
                       std::vector<LinearWeightGrad>* defer_weight, const Tensor& gelu_pre) const;

  Parameter* w_;
  Parameter* b_;
  Options opts_;
};

}  // namespace pp3d
