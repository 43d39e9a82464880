#include "pp3d/comm/local_communicator.h"

#include "comm/comm_util.h"

namespace pp3d {

LocalCommunicator::LocalCommunicator(std::string name, int global_rank)
    : name_(std::move(name)), global_rank_(global_rank) {}

int LocalCommunicator::global_rank(int r) const {
  PP3D_CHECK(r == 0, "group '{}' has 1 rank; rank {} does not exist", name_, r);
  return global_rank_;
}

void LocalCommunicator::all_reduce(Tensor& t, ReduceOp) { detail::check_comm_tensor(t, "all_reduce", *this); }

void LocalCommunicator::reduce_scatter(const Tensor& in, Tensor& out, ReduceOp) {
  detail::check_reduce_scatter_args(in, out, *this);
  if (in.raw() != out.raw()) out.copy_from(in.reshape(out.shape()));
}

void LocalCommunicator::all_gather(const Tensor& in, Tensor& out) {
  detail::check_all_gather_args(in, out, *this);
  if (in.raw() != out.raw()) out.copy_from(in.reshape(out.shape()));
}

void LocalCommunicator::broadcast(Tensor& t, int root) {
  detail::check_comm_tensor(t, "broadcast", *this);
  detail::check_root(root, "broadcast", *this);
}

void LocalCommunicator::send(const Tensor& t, int peer, int) {
  PP3D_FAIL("send on group '{}' (1 rank) to peer {}: a one-rank group has no other rank to send to", name_, peer);
}

void LocalCommunicator::recv(Tensor& t, int peer, int) {
  PP3D_FAIL("recv on group '{}' (1 rank) from peer {}: a one-rank group has no other rank to receive from",
            name_, peer);
}

void LocalCommunicator::batch_send_recv(std::vector<P2POp>& ops) {
  PP3D_CHECK(ops.empty(), "batch_send_recv on group '{}' (1 rank) with {} ops: a one-rank group has no peer",
             name_, ops.size());
}

std::unique_ptr<CommHandle> LocalCommunicator::all_reduce_async(Tensor& t, ReduceOp op, StreamHandle) {
  all_reduce(t, op);
  return std::make_unique<detail::DoneHandle>();
}

std::unique_ptr<CommHandle> LocalCommunicator::reduce_scatter_async(const Tensor& in, Tensor& out, ReduceOp op,
                                                                    StreamHandle) {
  reduce_scatter(in, out, op);
  return std::make_unique<detail::DoneHandle>();
}

std::unique_ptr<CommHandle> LocalCommunicator::all_gather_async(const Tensor& in, Tensor& out, StreamHandle) {
  all_gather(in, out);
  return std::make_unique<detail::DoneHandle>();
}

std::shared_ptr<Communicator> LocalCommunicator::split(int color, int, const std::string& name) {
  if (color < 0) return nullptr;
  return std::make_shared<LocalCommunicator>(name, global_rank_);
}

}  // namespace pp3d
