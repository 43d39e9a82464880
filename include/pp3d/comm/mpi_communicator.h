// MpiCommunicator: collectives and point-to-point over an MPI communicator.
//
// Host memory: f32 and i32 are reduced by MPI directly (in place); bf16 and f16
// are converted to an f32 host buffer, reduced in f32 and rounded back once.
// Device tensors are staged through host buffers (Tensor::to / copy_from), so
// several processes may share one GPU in tests. Every blocking call is built
// from non-blocking MPI plus a polling loop with a deadline
// (comm_timeout_seconds()); on expiry it throws pp3d::Error naming the
// operation, the group and the peer(s), and the communicator refuses further
// calls. Errors are returned (MPI_ERRORS_RETURN), not fatal, where MPI allows.
// The MPI handle lives in the pimpl: this header never includes <mpi.h>.
// Requires MPI to be initialised (see bootstrap.h). Owns a duplicate of the
// MPI communicator, freed on destruction (unless MPI is already finalised).
// Thread-safety: one communicator from one thread at a time.
#pragma once

#include <memory>

#include "pp3d/comm/communicator.h"

namespace pp3d {

class MpiCommunicator final : public Communicator {
 public:
  struct Impl;

  // A communicator over (a duplicate of) MPI_COMM_WORLD, named "world".
  static std::shared_ptr<MpiCommunicator> world();
  // From a native handle: `mpi_comm` points to an MPI_Comm, which is duplicated.
  static std::shared_ptr<MpiCommunicator> from_native(const void* mpi_comm, const std::string& name);

  explicit MpiCommunicator(std::unique_ptr<Impl> impl);
  ~MpiCommunicator() override;
  MpiCommunicator(const MpiCommunicator&) = delete;
  MpiCommunicator& operator=(const MpiCommunicator&) = delete;

  int rank() const override;
  int size() const override;
  std::string name() const override;
  int global_rank(int r) const override;

  void all_reduce(Tensor& t, ReduceOp op = ReduceOp::Sum) override;
  void reduce_scatter(const Tensor& in, Tensor& out, ReduceOp op = ReduceOp::Sum) override;
  void all_gather(const Tensor& in, Tensor& out) override;
  void broadcast(Tensor& t, int root) override;
  void send(const Tensor& t, int peer, int tag = 0) override;
  void recv(Tensor& t, int peer, int tag = 0) override;
  void batch_send_recv(std::vector<P2POp>& ops) override;
  void barrier() override;

  std::unique_ptr<CommHandle> all_reduce_async(Tensor& t, ReduceOp op = ReduceOp::Sum,
                                               StreamHandle stream = nullptr) override;
  std::unique_ptr<CommHandle> reduce_scatter_async(const Tensor& in, Tensor& out, ReduceOp op = ReduceOp::Sum,
                                                   StreamHandle stream = nullptr) override;
  std::unique_ptr<CommHandle> all_gather_async(const Tensor& in, Tensor& out,
                                               StreamHandle stream = nullptr) override;

  std::shared_ptr<Communicator> split(int color, int key, const std::string& name) override;

  // Pointer to the underlying MPI_Comm (for interop; owned by this object).
  const void* native_handle() const;

 private:
  std::unique_ptr<Impl> impl_;
};

}  // namespace pp3d
