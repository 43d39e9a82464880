// LocalCommunicator: the communicator of a group with exactly one rank.
//
// Every collective is the identity (Avg divides by 1, all_gather and
// reduce_scatter copy), async forms complete immediately, split returns another
// one-rank group, and point-to-point is an error (there is no other rank).
// Argument checks are the same as in the multi-rank communicators, so a bug
// shows up in a serial run too. Holds no resources; thread-safety as Communicator.
#pragma once

#include "pp3d/comm/communicator.h"

namespace pp3d {

class LocalCommunicator final : public Communicator {
 public:
  // `global_rank`: the world rank reported by global_rank(0) (for messages).
  explicit LocalCommunicator(std::string name = "world", int global_rank = 0);

  int rank() const override { return 0; }
  int size() const override { return 1; }
  std::string name() const override { return name_; }
  int global_rank(int r) const override;

  void all_reduce(Tensor& t, ReduceOp op = ReduceOp::Sum) override;
  void reduce_scatter(const Tensor& in, Tensor& out, ReduceOp op = ReduceOp::Sum) override;
  void all_gather(const Tensor& in, Tensor& out) override;
  void broadcast(Tensor& t, int root) override;
  void send(const Tensor& t, int peer, int tag = 0) override;
  void recv(Tensor& t, int peer, int tag = 0) override;
  void batch_send_recv(std::vector<P2POp>& ops) override;
  void barrier() override {}

  std::unique_ptr<CommHandle> all_reduce_async(Tensor& t, ReduceOp op = ReduceOp::Sum,
                                               StreamHandle stream = nullptr) override;
  std::unique_ptr<CommHandle> reduce_scatter_async(const Tensor& in, Tensor& out, ReduceOp op = ReduceOp::Sum,
                                                   StreamHandle stream = nullptr) override;
  std::unique_ptr<CommHandle> all_gather_async(const Tensor& in, Tensor& out,
                                               StreamHandle stream = nullptr) override;

  std::shared_ptr<Communicator> split(int color, int key, const std::string& name) override;

 private:
  std::string name_;
  int global_rank_;
};

}  // namespace pp3d
