// TcpCommunicator: a multi-process communicator over the TCP store, for
// torchrun-style CPU runs without MPI.
//
// Correctness over speed: every message goes through rank 0's store (one copy
// in, one copy out). Reductions gather all contributions and add them in rank
// order 0..n-1 on every rank, so results are deterministic and bitwise equal on
// all ranks; bf16/f16 are accumulated in f32. Sends are buffered in the store
// (a send returns before the matching recv). Deadlines as in Communicator:
// a timeout names the ranks whose contribution never arrived. Async forms run
// synchronously and return completed handles. Device tensors are staged
// through host buffers. Shares the store with its splits; one thread at a time.
#pragma once

#include <map>
#include <memory>
#include <utility>

#include "pp3d/comm/communicator.h"
#include "pp3d/comm/tcp_store.h"

namespace pp3d {

class TcpCommunicator final : public Communicator {
 public:
  // The world group: rank and size are the store's.
  explicit TcpCommunicator(std::shared_ptr<TcpStore> store, std::string name = "world");
  // A sub-group (made by split): `id` is unique per group, `global` maps ranks.
  TcpCommunicator(std::shared_ptr<TcpStore> store, std::string name, std::string id, int rank,
                  std::vector<int> global);

  int rank() const override { return rank_; }
  int size() const override { return static_cast<int>(global_.size()); }
  std::string name() const override { return name_; }
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

  const std::shared_ptr<TcpStore>& store() const { return store_; }

 private:
  // Key prefix of the next collective ("<id>/c/<seq>/").
  std::string next_prefix();
  // Waits for the other ranks' keys prefix+<r>[suffix]; throws naming the missing ranks.
  void wait_peers(const char* op, const std::string& what, const std::vector<std::string>& keys,
                  const std::vector<int>& owners);
  std::string p2p_key(int src, int dst, int tag, int64_t n) const;

  std::shared_ptr<TcpStore> store_;
  std::string name_;
  std::string id_;
  int rank_ = 0;
  std::vector<int> global_;
  int64_t seq_ = 0;
  std::map<std::pair<int, int>, int64_t> sent_, received_;  // (peer, tag) -> count
};

}  // namespace pp3d
