// NcclCommunicator::Impl and the event-based async handle (internal; CUDA builds only).
//
// Impl owns the ncclComm_t and the communicator's stream. Every operation is
// enqueued by Impl::launch(): record an event on the compute stream, make the
// comm stream wait for it, enqueue the NCCL calls, record a "done" event; the
// returned NcclHandle polls that event (and ncclCommGetAsyncError) until the
// deadline, aborting the communicator on timeout or error.
#pragma once

#include <cuda_runtime.h>
#include <nccl.h>

#include <functional>
#include <string>
#include <vector>

#include "pp3d/comm/nccl_communicator.h"

namespace pp3d {

struct NcclCommunicator::Impl {
  ncclComm_t comm = nullptr;
  cudaStream_t stream = nullptr;          // owned: where every NCCL call runs
  cudaStream_t compute = nullptr;         // not owned: default compute stream (nullptr = legacy default)
  int device = 0;
  int rank = 0;
  int size = 1;
  std::string name;
  std::vector<int> global;                // global rank of each member
  std::string broken;                     // why the communicator is unusable ("" = fine)
  void* barrier_buf = nullptr;            // one device int for barrier()

  Impl(ncclComm_t c, int dev, std::string group_name, std::vector<int> global_ranks);
  ~Impl();

  void check_usable(const char* op) const;
  // Throws unless t is defined, on this GPU and of a communicable dtype.
  void check_device_tensor(const Tensor& t, const char* op) const;
  // Aborts the NCCL communicator, marks it broken and throws a pp3d::Error built from `why`.
  [[noreturn]] void fail(const std::string& why);
  std::string describe() const;  // "group 'tp' (rank 1 of 2, global ranks [2, 3])"
};

namespace detail {
// Orders impl's comm stream after `compute_stream` (nullptr: impl's default compute stream),
// runs `enqueue` (the NCCL calls, on impl->stream), records completion and returns the
// handle, which keeps `keep` (the tensors involved) alive until it completes.
std::unique_ptr<CommHandle> nccl_launch(const std::shared_ptr<NcclCommunicator::Impl>& impl, const char* op,
                                        StreamHandle compute_stream, std::vector<Tensor> keep,
                                        const std::function<ncclResult_t()>& enqueue);
ncclDataType_t nccl_dtype(DType t);
ncclRedOp_t nccl_op(ReduceOp op);
void check_nccl(ncclResult_t r, const char* call, const NcclCommunicator::Impl& impl, const char* op);
}  // namespace detail

}  // namespace pp3d
