// Internal helpers shared by the host communicators (Local, MPI, TCP): argument
// checks with uniform messages, host staging of device / 16-bit tensors, and
// the process-wide "a communication call failed" flag used at shutdown.
#pragma once

#include <string>
#include <vector>

#include "pp3d/comm/communicator.h"

namespace pp3d::detail {

// "[0, 2, 4]"
std::string ranks_str(const std::vector<int>& ranks);
// Global ranks of every member of `c`.
std::vector<int> global_ranks_of(const Communicator& c);

// Throws unless the tensor is defined and of a communicable dtype.
void check_comm_tensor(const Tensor& t, const char* op, const Communicator& c);
void check_reduce_scatter_args(const Tensor& in, const Tensor& out, const Communicator& c);
void check_all_gather_args(const Tensor& in, const Tensor& out, const Communicator& c);
void check_peer(int peer, const char* op, const Communicator& c);
void check_root(int root, const char* op, const Communicator& c);

// A host copy of a tensor for a reduction: f32 for f32/bf16/f16, i32 for i32.
// Host f32/i32 tensors are used in place (no copy).
struct ReduceStage {
  Tensor host;          // what the reduction works on
  bool aliased = true;  // host shares the user's storage
};
ReduceStage stage_reduce(const Tensor& t, bool copy_in);
// Writes a reduction result back into `dst` (cast to its dtype, to its device).
void unstage_reduce(const ReduceStage& s, Tensor& dst);

// A host tensor of the same dtype (aliases host tensors) for byte movement.
Tensor stage_bytes(const Tensor& t, bool copy_in);
void unstage_bytes(const Tensor& host, Tensor& dst);

// acc[i] (op)= x[i] for f32 / i32 host buffers; Avg accumulates like Sum.
void reduce_into(Tensor& acc, const Tensor& x, ReduceOp op);
// For Avg: divides by n (i32 truncates toward zero).
void finish_avg(Tensor& t, ReduceOp op, int n);

// Set when a communication call timed out or failed; finalize then skips
// MPI_Finalize (which would wait for the dead peer).
void mark_comm_failed();
bool comm_failed();

// Completed-at-creation handle for synchronous implementations.
class DoneHandle final : public CommHandle {
 public:
  void wait() override {}
  bool test() override { return true; }
};

}  // namespace pp3d::detail
