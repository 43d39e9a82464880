// Communicator: collectives and point-to-point over Tensors, one per process group.
//
// Implementations: LocalCommunicator (a single rank: every collective is the
// identity), MpiCommunicator (host memory; device tensors staged through host
// buffers), NcclCommunicator (device memory, own stream; CUDA builds only).
// Every blocking call has a deadline (PP3D_COMM_TIMEOUT seconds, default 600,
// NCCL_TIMEOUT honoured); on expiry it throws pp3d::Error naming the operation,
// the group and the peer(s) that did not arrive.
// Thread-safety: one communicator is used from one thread at a time.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "pp3d/core/tensor.h"

namespace pp3d {

enum class ReduceOp { Sum, Avg, Max };

// Handle of an asynchronous operation. wait() blocks (with the deadline) until
// the result is in place; test() polls. Destroying an unfinished handle waits.
class CommHandle {
 public:
  virtual ~CommHandle() = default;
  virtual void wait() = 0;
  virtual bool test() = 0;
};

// One entry of a batched point-to-point group.
struct P2POp {
  enum Kind { Send, Recv } kind;
  Tensor tensor;  // Send: read; Recv: written (shape and dtype known by both sides)
  int peer;       // rank within this communicator
  int tag = 0;
};

// Opaque stream handle (cudaStream_t on CUDA; ignored by host communicators).
using StreamHandle = void*;

class Communicator {
 public:
  virtual ~Communicator() = default;

  virtual int rank() const = 0;
  virtual int size() const = 0;
  // Group name used in logs and errors, e.g. "world", "tp", "dp[2]".
  virtual std::string name() const = 0;
  // Global (world) rank of local rank r, for messages naming a peer.
  virtual int global_rank(int r) const = 0;

  // In place; Avg divides by size(). Works on f32, bf16, f16 (accumulated in
  // f32) and i32.
  virtual void all_reduce(Tensor& t, ReduceOp op = ReduceOp::Sum) = 0;
  // in.numel() == size() * out.numel(); rank r receives the reduced r-th chunk.
  virtual void reduce_scatter(const Tensor& in, Tensor& out, ReduceOp op = ReduceOp::Sum) = 0;
  // out.numel() == size() * in.numel(); chunks in rank order.
  virtual void all_gather(const Tensor& in, Tensor& out) = 0;
  virtual void broadcast(Tensor& t, int root) = 0;
  virtual void send(const Tensor& t, int peer, int tag = 0) = 0;
  virtual void recv(Tensor& t, int peer, int tag = 0) = 0;
  // All ops of the group are posted together and completed together (no
  // ordering deadlock between a send and a recv with the same peer).
  virtual void batch_send_recv(std::vector<P2POp>& ops) = 0;
  virtual void barrier() = 0;

  // Asynchronous forms: the tensors must stay alive and untouched until wait().
  // `stream`: the compute stream to order against (CUDA); nullptr = default.
  virtual std::unique_ptr<CommHandle> all_reduce_async(Tensor& t, ReduceOp op = ReduceOp::Sum,
                                                       StreamHandle stream = nullptr) = 0;
  virtual std::unique_ptr<CommHandle> reduce_scatter_async(const Tensor& in, Tensor& out,
                                                           ReduceOp op = ReduceOp::Sum,
                                                           StreamHandle stream = nullptr) = 0;
  virtual std::unique_ptr<CommHandle> all_gather_async(const Tensor& in, Tensor& out,
                                                       StreamHandle stream = nullptr) = 0;

  // Collective over this group: ranks with the same color form a new group,
  // ordered by (key, rank). `name` labels the new group in messages. A rank
  // passing color < 0 joins no group and gets nullptr (MPI_UNDEFINED).
  virtual std::shared_ptr<Communicator> split(int color, int key, const std::string& name) = 0;
};

// The deadline of every blocking communication call, in seconds: env
// PP3D_COMM_TIMEOUT, else NCCL_TIMEOUT, else 600. Read on every call (cheap), so
// tests may change it; a value that is not a positive number is a pp3d::Error.
double comm_timeout_seconds();

const char* reduce_op_name(ReduceOp op);

}  // namespace pp3d
