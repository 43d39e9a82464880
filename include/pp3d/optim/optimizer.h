// AdamW over a list of Parameters, and global gradient-norm clipping.
//
// AdamW keeps m and v (f32, MemCategory::Optimizer) per parameter, plus an f32
// master copy for parameters stored in bf16/f16 (initialised with
// master_initial_values: the exact f32 init values of a fresh model). Weight decay applies to the
// parameters whose Parameter::weight_decay is set (2-D matrices by default).
// The Parameter objects must outlive the optimizer. Not thread-safe.
//
// Gradient norm: the local sum of squares is taken over the parameters with
// counted_in_norm set (so TP-replicated tensors and a tied-embedding copy
// count once), then handed to a SumSquaresReducer that a parallel trainer uses
// to all-reduce it over its model-parallel / data-parallel groups. The serial
// trainer passes none.
#pragma once

#include <cstdint>
#include <functional>
#include <vector>

#include "pp3d/backend/backend.h"
#include "pp3d/core/parameter.h"

namespace pp3d {

struct AdamWConfig {
  float beta1 = 0.9f;
  float beta2 = 0.95f;
  float eps = 1e-8f;
  float weight_decay = 0.1f;  // decoupled, only on Parameter::weight_decay tensors
};

class AdamW {
 public:
  struct State {
    Tensor m, v;    // f32, local shape
    Tensor master;  // f32 copy when the parameter is not f32, else undefined
  };

  AdamW(Backend& backend, std::vector<Parameter*> params, const AdamWConfig& config = {});

  // One update of every parameter with learning rate `lr`; gradients are
  // multiplied by grad_scale first (clipping coefficient / loss-scale inverse).
  // Increments step_count() (bias correction uses the new count).
  void step(float lr, float grad_scale = 1.0f);

  int64_t step_count() const { return step_; }
  void set_step_count(int64_t s) { step_ = s; }  // for checkpoint restore
  const AdamWConfig& config() const { return cfg_; }
  Backend& backend() const { return *backend_; }
  const std::vector<Parameter*>& params() const { return params_; }
  std::vector<State>& state() { return state_; }  // index-aligned with params()

 private:
  Backend* backend_;
  std::vector<Parameter*> params_;
  AdamWConfig cfg_;
  std::vector<State> state_;
  int64_t step_ = 0;
};

// Maps this process's partial sum of squares to the global one (e.g. an
// all-reduce over the model-parallel and data-parallel groups). Empty = identity.
using SumSquaresReducer = std::function<double(double local_sum_squares)>;

// Sum of squares of the gradients of the parameters with counted_in_norm (double).
double local_grad_sum_squares(Backend& backend, const std::vector<Parameter*>& params);

// Global L2 norm of all gradients.
float grad_norm(Backend& backend, const std::vector<Parameter*>& params, const SumSquaresReducer& reduce = {});

// min(1, max_norm / (norm + 1e-6)) (PyTorch's clip_grad_norm_ coefficient).
float clip_coefficient(float norm, float max_norm);

// Computes the global norm and, if it exceeds max_norm, scales every gradient
// in `params` by clip_coefficient (all of them, counted_in_norm or not).
// Returns the norm before clipping. max_norm <= 0 disables scaling.
float clip_grad_norm(Backend& backend, const std::vector<Parameter*>& params, float max_norm,
                     const SumSquaresReducer& reduce = {});

}  // namespace pp3d
