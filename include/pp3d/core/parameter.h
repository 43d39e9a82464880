// Parameter: one trainable tensor (or this rank's shard of it) with its
// gradient, global shape, shard description and initialisation rule.
//
// Initialisation is layout-independent: element e of the FULL tensor (global
// row-major flat index) gets init.mean + init.std * rng_normal(rng_key(seed,
// name), e) for Normal init, so any shard computes exactly its slice of the
// serial model's tensor. The owner of a Parameter (a model) owns value/grad
// storage; Parameter* handed out stay valid for the owner's lifetime.
// Not thread-safe.
#pragma once

#include <cstdint>
#include <optional>
#include <string>

#include "pp3d/core/tensor.h"

namespace pp3d {

// How this rank's tensor is cut from the global one.
// dim == -1: not sharded (local shape == global shape).
// Otherwise global dim `dim` consists of `segments` equal blocks (fused
// q|k|v: 3, else 1); this shard holds [offset, offset + length) of EVERY block,
// concatenated in block order. Example: c_attn.weight [3C, C] with tp = 2,
// rank 1: dim 0, segments 3, offset C/2, length C/2 -> rows
// [C/2, C) ++ [3C/2, 2C) ++ [5C/2, 3C), i.e. local [3C/2, C] holding this
// rank's heads of q, then of k, then of v (the layout attention expects).
struct ShardSpec {
  int dim = -1;
  int64_t offset = 0;
  int64_t length = 0;
  int64_t segments = 1;

  bool sharded() const { return dim >= 0; }
};

enum class InitKind { Zeros, Ones, Normal };

struct InitSpec {
  InitKind kind = InitKind::Zeros;
  float mean = 0.0f;
  float std = 0.0f;
};

struct Parameter {
  std::string name;    // GPT-2 style: "wte", "wpe", "h.3.attn.c_attn.weight", "ln_f.bias", ...
  Tensor value;        // local shard, MemCategory::Params
  Tensor grad;         // same shape, f32, MemCategory::Grads (accumulated by backward)
  Shape global_shape;  // shape of the full tensor
  ShardSpec shard;
  InitSpec init;
  bool weight_decay = false;      // default: true for 2-D matrices only
  bool replicated_in_tp = true;   // identical on every TP rank (LayerNorm, row-parallel bias, ...)
  // False for duplicates that must not be counted twice in a global gradient
  // norm: the head stage's copy of a tied wte, and replicated tensors on
  // tp_rank != 0.
  bool counted_in_norm = true;
  // Which layer owns it: -1 the embedding (wte, wpe), [0, L) transformer
  // block l, L the head (ln_f, lm_head, the head stage's tied wte copy).
  // Used for layer-granular hooks (bucketed gradient reduction, ZeRO-3).
  int64_t layer = -1;
  // The seed init_parameter() drew the values with (unset for parameters
  // filled otherwise); lets an optimizer rebuild the exact f32 init values as
  // the master copy of a 16-bit parameter (master_initial_values).
  std::optional<uint64_t> init_seed;

  Shape local_shape() const { return value.shape(); }
  int64_t global_numel() const { return shape_numel(global_shape); }
};

// Local shape of a shard of `global` (checks that the shard fits).
Shape shard_local_shape(const Shape& global, const ShardSpec& shard);

// Computes the initial values of the shard (on the host, f32) by global
// element index. Supports 1-D and 2-D tensors sharded along dim 0 or the last dim.
Tensor make_initial_values(const Shape& global, const ShardSpec& shard, const InitSpec& init,
                           uint64_t seed, const std::string& name);

// Writes make_initial_values(...) into p.value (any device / float dtype,
// 16-bit: rounded to nearest even) and records p.init_seed.
void init_parameter(Parameter& p, uint64_t seed);

// The f32 master values of a parameter (host, f32, local shape): the
// layout-independent f32 init values when p.init_seed is set and p.value still
// holds exactly their rounding to its dtype (a freshly initialised model), so
// the master equals the f32 model's init bitwise; otherwise p.value converted
// to f32 (e.g. values loaded or modified after init). p.value must be defined.
Tensor master_initial_values(const Parameter& p);

}  // namespace pp3d
