// NcclCommunicator: collectives and point-to-point on device tensors through NCCL
// (CUDA builds only; the implementation lives in lib/comm/nccl and this header
// includes neither NCCL nor CUDA: the handles are in the pimpl).
//
// Streams: every operation runs on the communicator's own stream. Before it is
// enqueued, that stream waits (through a CUDA event) for all work queued so far
// on the *compute stream*: the `stream` argument of an async call, else the
// stream given to set_compute_stream(), else the legacy default stream. So
// pass the stream that produced the tensors (Backend::native_stream()).
// Synchronous calls return when the result is in place (host-side wait).
// Async handles: wait() blocks until done, then makes the compute stream wait
// for the result too; test() polls. Both honour the deadline
// (comm_timeout_seconds()): on expiry, or on an asynchronous NCCL error, the
// NCCL communicator is aborted (ncclCommAbort) and a pp3d::Error names the
// operation, the group and the ranks; the communicator then refuses further calls.
// Tensors: f32, bf16, f16 (reduced by NCCL in that type) and i32, all on this
// communicator's GPU. Avg uses ncclAvg. NCCL has no tags: send/recv match in
// posting order per peer and `tag` is ignored.
// Construction, ncclCommSplit and ncclCommInitRank are blocking NCCL calls
// (the unique-id exchange before them has a deadline).
// Owns the ncclComm_t, its stream and events; destroyed on destruction.
// Thread-safety: one communicator from one thread at a time.
#pragma once

#include <memory>
#include <string>

#include "pp3d/comm/communicator.h"

namespace pp3d {

class TcpStore;

class NcclCommunicator final : public Communicator {
 public:
  struct Impl;

  // Collective over `bootstrap` (any host communicator: MPI, TCP or local): rank 0
  // creates the NCCL unique id and broadcasts it through `bootstrap`; every rank
  // then joins on GPU `device`. Ranks and global ranks follow `bootstrap`.
  static std::shared_ptr<NcclCommunicator> create(Communicator& bootstrap, int device,
                                                  const std::string& name = "world");
  // Through a TCP store (torchrun-style launches): rank 0 publishes the id under `key`.
  static std::shared_ptr<NcclCommunicator> create_from_store(TcpStore& store, const std::string& key, int rank,
                                                             int size, int device, const std::string& name = "world");
  // The world group on GPU `device`: through world_store() in TCP mode, else through world().
  // Requires init_world() first.
  static std::shared_ptr<NcclCommunicator> world(int device);

  explicit NcclCommunicator(std::unique_ptr<Impl> impl);
  ~NcclCommunicator() override;
  NcclCommunicator(const NcclCommunicator&) = delete;
  NcclCommunicator& operator=(const NcclCommunicator&) = delete;

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

  // ncclCommSplit; the new group's global ranks are gathered over it.
  std::shared_ptr<Communicator> split(int color, int key, const std::string& name) override;

  // The compute stream used when an async call passes nullptr, and by synchronous calls.
  void set_compute_stream(StreamHandle stream);
  // The communicator's own stream (a cudaStream_t).
  StreamHandle comm_stream() const;
  int device() const;

 private:
  std::shared_ptr<Impl> impl_;
};

}  // namespace pp3d
