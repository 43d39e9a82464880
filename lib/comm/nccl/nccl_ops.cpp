// NcclCommunicator: collectives, point-to-point, barrier and split. Every call goes
// through detail::nccl_launch (stream ordering, completion event, deadline); the
// synchronous forms wait on the returned handle.
#include "comm/comm_util.h"
#include "comm/nccl/nccl_detail.h"

#include "backend/cuda/cuda_check.h"

namespace pp3d {

using detail::nccl_dtype;
using detail::nccl_launch;
using detail::nccl_op;

std::unique_ptr<CommHandle> NcclCommunicator::all_reduce_async(Tensor& t, ReduceOp op, StreamHandle stream) {
  impl_->check_device_tensor(t, "all_reduce");
  if (t.numel() == 0) return std::make_unique<detail::DoneHandle>();
  Impl* im = impl_.get();
  void* buf = t.raw();
  const std::size_t count = static_cast<std::size_t>(t.numel());
  const ncclDataType_t dt = nccl_dtype(t.dtype());
  return nccl_launch(impl_, "all_reduce", stream, {t}, [=] {
    return ncclAllReduce(buf, buf, count, dt, nccl_op(op), im->comm, im->stream);
  });
}

std::unique_ptr<CommHandle> NcclCommunicator::reduce_scatter_async(const Tensor& in, Tensor& out, ReduceOp op,
                                                                   StreamHandle stream) {
  detail::check_reduce_scatter_args(in, out, *this);
  impl_->check_device_tensor(in, "reduce_scatter");
  impl_->check_device_tensor(out, "reduce_scatter");
  if (out.numel() == 0) return std::make_unique<detail::DoneHandle>();
  Impl* im = impl_.get();
  const void* src = in.raw();
  void* dst = out.raw();
  const std::size_t count = static_cast<std::size_t>(out.numel());
  const ncclDataType_t dt = nccl_dtype(in.dtype());
  return nccl_launch(impl_, "reduce_scatter", stream, {in, out}, [=] {
    return ncclReduceScatter(src, dst, count, dt, nccl_op(op), im->comm, im->stream);
  });
}

std::unique_ptr<CommHandle> NcclCommunicator::all_gather_async(const Tensor& in, Tensor& out, StreamHandle stream) {
  detail::check_all_gather_args(in, out, *this);
  impl_->check_device_tensor(in, "all_gather");
  impl_->check_device_tensor(out, "all_gather");
  if (in.numel() == 0) return std::make_unique<detail::DoneHandle>();
  Impl* im = impl_.get();
  const void* src = in.raw();
  void* dst = out.raw();
  const std::size_t count = static_cast<std::size_t>(in.numel());
  const ncclDataType_t dt = nccl_dtype(in.dtype());
  return nccl_launch(impl_, "all_gather", stream, {in, out},
                     [=] { return ncclAllGather(src, dst, count, dt, im->comm, im->stream); });
}

void NcclCommunicator::all_reduce(Tensor& t, ReduceOp op) { all_reduce_async(t, op)->wait(); }
void NcclCommunicator::reduce_scatter(const Tensor& in, Tensor& out, ReduceOp op) {
  reduce_scatter_async(in, out, op)->wait();
}
void NcclCommunicator::all_gather(const Tensor& in, Tensor& out) { all_gather_async(in, out)->wait(); }

void NcclCommunicator::broadcast(Tensor& t, int root) {
  detail::check_root(root, "broadcast", *this);
  impl_->check_device_tensor(t, "broadcast");
  if (t.numel() == 0) return;
  Impl* im = impl_.get();
  void* buf = t.raw();
  const std::size_t count = static_cast<std::size_t>(t.numel());
  const ncclDataType_t dt = nccl_dtype(t.dtype());
  nccl_launch(impl_, "broadcast", nullptr, {t}, [=] {
    return ncclBroadcast(buf, buf, count, dt, root, im->comm, im->stream);
  })->wait();
}

void NcclCommunicator::send(const Tensor& t, int peer, int /*tag*/) {
  std::vector<P2POp> ops{P2POp{P2POp::Send, t, peer, 0}};
  batch_send_recv(ops);
}

void NcclCommunicator::recv(Tensor& t, int peer, int /*tag*/) {
  std::vector<P2POp> ops{P2POp{P2POp::Recv, t, peer, 0}};
  batch_send_recv(ops);
}

void NcclCommunicator::batch_send_recv(std::vector<P2POp>& ops) {
  std::vector<Tensor> keep;
  for (const P2POp& o : ops) {
    const char* what = o.kind == P2POp::Send ? "send" : "recv";
    detail::check_peer(o.peer, what, *this);
    impl_->check_device_tensor(o.tensor, what);
    keep.push_back(o.tensor);
  }
  if (ops.empty()) return;
  Impl* im = impl_.get();
  const std::vector<P2POp> posted = ops;  // the lambda runs before this function returns
  nccl_launch(impl_, ops.size() == 1 ? (ops[0].kind == P2POp::Send ? "send" : "recv") : "batch_send_recv", nullptr,
              std::move(keep), [im, &posted] {
                ncclResult_t first = ncclGroupStart();
                if (first != ncclSuccess) return first;
                for (const P2POp& o : posted) {
                  if (o.tensor.numel() == 0) continue;
                  const std::size_t count = static_cast<std::size_t>(o.tensor.numel());
                  const ncclDataType_t dt = nccl_dtype(o.tensor.dtype());
                  const ncclResult_t r =
                      o.kind == P2POp::Send ? ncclSend(o.tensor.raw(), count, dt, o.peer, im->comm, im->stream)
                                            : ncclRecv(o.tensor.raw(), count, dt, o.peer, im->comm, im->stream);
                  if (r != ncclSuccess && first == ncclSuccess) first = r;
                }
                const ncclResult_t end = ncclGroupEnd();  // always close the group
                return first != ncclSuccess ? first : end;
              })
      ->wait();
}

void NcclCommunicator::barrier() {
  // A one-element all-reduce; the host waits for it (with the deadline).
  Impl* im = impl_.get();
  nccl_launch(impl_, "barrier", nullptr, {}, [im] {
    return ncclAllReduce(im->barrier_buf, im->barrier_buf, 1, ncclInt32, ncclSum, im->comm, im->stream);
  })->wait();
}

std::shared_ptr<Communicator> NcclCommunicator::split(int color, int key, const std::string& name) {
  impl_->check_usable("split");
  PP3D_CHECK_CUDA(cudaSetDevice(impl_->device));
  ncclComm_t nc = nullptr;
  detail::check_nccl(ncclCommSplit(impl_->comm, color < 0 ? NCCL_SPLIT_NOCOLOR : color, key, &nc, nullptr),
                     "ncclCommSplit", *impl_, "split");
  if (color < 0 || nc == nullptr) return nullptr;
  auto sub = std::make_shared<NcclCommunicator>(std::make_unique<Impl>(nc, impl_->device, name, std::vector<int>{}));
  sub->impl_->compute = impl_->compute;
  // Members' global ranks, gathered over the new group (in its rank order).
  Tensor mine = Tensor::from_vector_i32({1}, {impl_->global[static_cast<std::size_t>(impl_->rank)]});
  Tensor mine_d = mine.to(Device::cuda(impl_->device));
  Tensor all_d = Tensor::empty({sub->size()}, DType::I32, Device::cuda(impl_->device));
  sub->all_gather(mine_d, all_d);
  Tensor all = all_d.to(Device::cpu());
  for (int r = 0; r < sub->size(); ++r)
    sub->impl_->global[static_cast<std::size_t>(r)] = all.data<int32_t>()[r];
  return sub;
}

}  // namespace pp3d
