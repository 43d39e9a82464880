// NcclCommunicator: construction (unique-id exchange), Impl, failure handling
// and the event-polling async handle. The collectives are in nccl_ops.cpp.
#include <chrono>
#include <cstring>
#include <thread>

#include "backend/cuda/cuda_check.h"
#include "comm/comm_util.h"
#include "comm/nccl/nccl_detail.h"
#include "pp3d/comm/bootstrap.h"
#include "pp3d/comm/tcp_store.h"
#include "pp3d/core/log.h"

namespace pp3d {

namespace {

std::shared_ptr<NcclCommunicator> make_comm(const ncclUniqueId& id, int rank, int size, int device,
                                            const std::string& name, std::vector<int> global) {
  PP3D_CHECK(device >= 0 && device < cuda_device_count(),
             "NCCL group '{}': cuda:{} requested but {} GPU(s) are visible", name, device, cuda_device_count());
  PP3D_CHECK_CUDA(cudaSetDevice(device));
  ncclComm_t comm = nullptr;
  const ncclResult_t r = ncclCommInitRank(&comm, size, id, rank);
  PP3D_CHECK(r == ncclSuccess, "NCCL group '{}': ncclCommInitRank (rank {} of {}, cuda:{}) failed: {}", name, rank,
             size, device, ncclGetErrorString(r));
  return std::make_shared<NcclCommunicator>(
      std::make_unique<NcclCommunicator::Impl>(comm, device, name, std::move(global)));
}

}  // namespace

// ---- construction ----------------------------------------------------------------------

std::shared_ptr<NcclCommunicator> NcclCommunicator::create(Communicator& bootstrap, int device,
                                                           const std::string& name) {
  static_assert(NCCL_UNIQUE_ID_BYTES % 4 == 0, "unique id must fit an i32 tensor");
  ncclUniqueId id{};
  if (bootstrap.rank() == 0) {
    const ncclResult_t r = ncclGetUniqueId(&id);
    PP3D_CHECK(r == ncclSuccess, "NCCL group '{}': ncclGetUniqueId failed: {}", name, ncclGetErrorString(r));
  }
  Tensor buf = Tensor::zeros({NCCL_UNIQUE_ID_BYTES / 4}, DType::I32);
  if (bootstrap.rank() == 0) std::memcpy(buf.raw(), &id, NCCL_UNIQUE_ID_BYTES);
  bootstrap.broadcast(buf, 0);  // host tensor: has the bootstrap's deadline
  std::memcpy(&id, buf.raw(), NCCL_UNIQUE_ID_BYTES);
  std::vector<int> global(static_cast<std::size_t>(bootstrap.size()));
  for (int r = 0; r < bootstrap.size(); ++r) global[static_cast<std::size_t>(r)] = bootstrap.global_rank(r);
  return make_comm(id, bootstrap.rank(), bootstrap.size(), device, name, std::move(global));
}

std::shared_ptr<NcclCommunicator> NcclCommunicator::create_from_store(TcpStore& store, const std::string& key, int rank,
                                                                      int size, int device, const std::string& name) {
  PP3D_CHECK(size >= 1 && rank >= 0 && rank < size, "NCCL group '{}': rank {} outside [0, {})", name, rank, size);
  ncclUniqueId id{};
  if (rank == 0) {
    const ncclResult_t r = ncclGetUniqueId(&id);
    PP3D_CHECK(r == ncclSuccess, "NCCL group '{}': ncclGetUniqueId failed: {}", name, ncclGetErrorString(r));
    const auto* p = reinterpret_cast<const uint8_t*>(&id);
    store.set(key, TcpStore::Bytes(p, p + NCCL_UNIQUE_ID_BYTES), size - 1);  // deleted once every rank read it
  } else {
    const TcpStore::Bytes bytes = store.get(key);  // deadline: the store's timeout
    PP3D_CHECK(bytes.size() == NCCL_UNIQUE_ID_BYTES, "NCCL group '{}': store key '{}' holds {} bytes, not an NCCL id",
               name, key, bytes.size());
    std::memcpy(&id, bytes.data(), NCCL_UNIQUE_ID_BYTES);
  }
  std::vector<int> global(static_cast<std::size_t>(size));
  for (int r = 0; r < size; ++r) global[static_cast<std::size_t>(r)] = r;
  return make_comm(id, rank, size, device, name, std::move(global));
}

std::shared_ptr<NcclCommunicator> NcclCommunicator::world(int device) {
  auto w = ::pp3d::world();
  PP3D_CHECK(w != nullptr, "NcclCommunicator::world: call init_world() first");
  static int generation = 0;  // every rank creates its worlds in the same order
  if (auto store = world_store())
    return create_from_store(*store, "pp3d/nccl/world/" + std::to_string(generation++), w->rank(), w->size(), device,
                             "world");
  return create(*w, device, "world");
}

NcclCommunicator::NcclCommunicator(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
NcclCommunicator::~NcclCommunicator() = default;

int NcclCommunicator::rank() const { return impl_->rank; }
int NcclCommunicator::size() const { return impl_->size; }
std::string NcclCommunicator::name() const { return impl_->name; }
int NcclCommunicator::global_rank(int r) const {
  PP3D_CHECK(r >= 0 && r < impl_->size, "global_rank: rank {} outside group '{}' of {}", r, impl_->name, impl_->size);
  return impl_->global[static_cast<std::size_t>(r)];
}
void NcclCommunicator::set_compute_stream(StreamHandle stream) { impl_->compute = static_cast<cudaStream_t>(stream); }
StreamHandle NcclCommunicator::comm_stream() const { return impl_->stream; }
int NcclCommunicator::device() const { return impl_->device; }

// ---- Impl -------------------------------------------------------------------------------

NcclCommunicator::Impl::Impl(ncclComm_t c, int dev, std::string group_name, std::vector<int> global_ranks)
    : comm(c), device(dev), name(std::move(group_name)), global(std::move(global_ranks)) {
  PP3D_CHECK_NCCL(ncclCommUserRank(comm, &rank));
  PP3D_CHECK_NCCL(ncclCommCount(comm, &size));
  if (global.size() != static_cast<std::size_t>(size)) {  // filled in later (split)
    global.assign(static_cast<std::size_t>(size), -1);
  }
  PP3D_CHECK_CUDA(cudaSetDevice(device));
  PP3D_CHECK_CUDA(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
  PP3D_CHECK_CUDA(cudaMalloc(&barrier_buf, sizeof(int)));
}

NcclCommunicator::Impl::~Impl() {
  cudaSetDevice(device);
  if (comm != nullptr) {
    // Let queued work finish (bounded by the deadline), then destroy; abort a stalled group.
    const auto t0 = std::chrono::steady_clock::now();
    double timeout = 600;
    try {
      timeout = comm_timeout_seconds();
    } catch (...) {
    }
    while (cudaStreamQuery(stream) == cudaErrorNotReady &&
           std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count() < timeout)
      std::this_thread::sleep_for(std::chrono::microseconds(100));
    if (cudaStreamQuery(stream) == cudaSuccess)
      ncclCommDestroy(comm);
    else
      ncclCommAbort(comm);
  }
  if (barrier_buf != nullptr) cudaFree(barrier_buf);
  if (stream != nullptr) cudaStreamDestroy(stream);
}

std::string NcclCommunicator::Impl::describe() const {
  return fmt::format("group '{}' (rank {} of {}, global ranks {}, NCCL)", name, rank, size, detail::ranks_str(global));
}

void NcclCommunicator::Impl::check_usable(const char* op) const {
  PP3D_CHECK(broken.empty(), "{} on group '{}': the group is unusable after an earlier failure ({})", op, name, broken);
}

void NcclCommunicator::Impl::check_device_tensor(const Tensor& t, const char* op) const {
  PP3D_CHECK(t.defined(), "{} on group '{}': the tensor is undefined", op, name);
  PP3D_CHECK(t.device() == Device::cuda(device), "{} on group '{}': tensor {} must live on cuda:{} (NCCL)", op, name,
             t.str(), device);
}

void NcclCommunicator::Impl::fail(const std::string& why) {
  if (broken.empty()) broken = why;
  if (comm != nullptr) {
    ncclCommAbort(comm);
    comm = nullptr;
  }
  detail::mark_comm_failed();
  PP3D_FAIL("{}", why);
}

// ---- async handle -----------------------------------------------------------------------

namespace {

class NcclHandle final : public CommHandle {
 public:
  NcclHandle(std::shared_ptr<NcclCommunicator::Impl> impl, std::string op, cudaStream_t compute, cudaEvent_t done,
             std::vector<Tensor> keep)
      : impl_(std::move(impl)),
        op_(std::move(op)),
        compute_(compute),
        done_(done),
        keep_(std::move(keep)),
        start_(std::chrono::steady_clock::now()) {}

  ~NcclHandle() override {
    if (!finished_) {
      try {
        wait();
      } catch (const std::exception& e) {
        logger()->error("unfinished {} handle destroyed: {}", op_, e.what());
      }
    }
    if (done_ != nullptr) cudaEventDestroy(done_);
  }

  void wait() override {
    while (!poll()) std::this_thread::sleep_for(std::chrono::microseconds(20));
  }
  bool test() override { return poll(); }

 private:
  // True when complete; throws (after aborting the group) on error or deadline.
  bool poll() {
    if (finished_) return true;
    if (!impl_->broken.empty()) {
      finished_ = true;
      impl_->check_usable(op_.c_str());
    }
    const cudaError_t q = cudaEventQuery(done_);
    if (q == cudaSuccess) {
      finished_ = true;
      keep_.clear();
      // Later work on the compute stream sees the result.
      PP3D_CHECK_CUDA(cudaStreamWaitEvent(compute_, done_, 0));
      return true;
    }
    if (q != cudaErrorNotReady) {
      finished_ = true;
      impl_->fail(fmt::format("{} on {}: CUDA error {} while waiting", op_, impl_->describe(), cudaGetErrorString(q)));
    }
    ncclResult_t async = ncclSuccess;
    if (impl_->comm != nullptr) ncclCommGetAsyncError(impl_->comm, &async);
    if (async != ncclSuccess && async != ncclInProgress) {
      finished_ = true;
      impl_->fail(
          fmt::format("{} on {} failed: {} (a peer may have died)", op_, impl_->describe(), ncclGetErrorString(async)));
    }
    const double timeout = comm_timeout_seconds();
    const double waited = std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
    if (waited > timeout) {
      finished_ = true;
      impl_->fail(
          fmt::format("{} on {} did not complete within {} s (PP3D_COMM_TIMEOUT / NCCL_TIMEOUT): some rank "
                      "of the group did not join; the NCCL communicator was aborted",
                      op_, impl_->describe(), timeout));
    }
    return false;
  }

  std::shared_ptr<NcclCommunicator::Impl> impl_;
  std::string op_;
  cudaStream_t compute_;
  cudaEvent_t done_;
  std::vector<Tensor> keep_;
  std::chrono::steady_clock::time_point start_;
  bool finished_ = false;
};

}  // namespace

namespace detail {

std::unique_ptr<CommHandle> nccl_launch(const std::shared_ptr<NcclCommunicator::Impl>& impl, const char* op,
                                        StreamHandle compute_stream, std::vector<Tensor> keep,
                                        const std::function<ncclResult_t()>& enqueue) {
  impl->check_usable(op);
  PP3D_CHECK_CUDA(cudaSetDevice(impl->device));
  cudaStream_t compute = compute_stream != nullptr ? static_cast<cudaStream_t>(compute_stream) : impl->compute;
  cudaEvent_t ready = nullptr, done = nullptr;
  PP3D_CHECK_CUDA(cudaEventCreateWithFlags(&ready, cudaEventDisableTiming));
  const cudaError_t e1 = cudaEventCreateWithFlags(&done, cudaEventDisableTiming);
  if (e1 != cudaSuccess) cudaEventDestroy(ready);
  PP3D_CHECK_CUDA(e1);
  auto cleanup = [&] {
    cudaEventDestroy(ready);
    cudaEventDestroy(done);
  };
  cudaError_t e = cudaEventRecord(ready, compute);
  if (e == cudaSuccess) e = cudaStreamWaitEvent(impl->stream, ready, 0);
  if (e != cudaSuccess) cleanup();
  PP3D_CHECK_CUDA(e);
  const ncclResult_t r = enqueue();
  if (r != ncclSuccess && r != ncclInProgress) {
    cleanup();
    impl->fail(
        fmt::format("{} on {}: enqueueing the NCCL call failed: {}", op, impl->describe(), ncclGetErrorString(r)));
  }
  e = cudaEventRecord(done, impl->stream);
  cudaEventDestroy(ready);  // released once the pending wait has consumed it
  if (e != cudaSuccess) cudaEventDestroy(done);
  PP3D_CHECK_CUDA(e);
  return std::make_unique<NcclHandle>(impl, op, compute, done, std::move(keep));
}

ncclDataType_t nccl_dtype(DType t) {
  switch (t) {
    case DType::F32:
      return ncclFloat32;
    case DType::BF16:
      return ncclBfloat16;
    case DType::F16:
      return ncclFloat16;
    case DType::I32:
      return ncclInt32;
  }
  return ncclFloat32;
}

ncclRedOp_t nccl_op(ReduceOp op) {
  switch (op) {
    case ReduceOp::Sum:
      return ncclSum;
    case ReduceOp::Avg:
      return ncclAvg;
    case ReduceOp::Max:
      return ncclMax;
  }
  return ncclSum;
}

void check_nccl(ncclResult_t r, const char* call, const NcclCommunicator::Impl& impl, const char* op) {
  PP3D_CHECK(r == ncclSuccess, "{} on {}: {} failed: {}", op, impl.describe(), call, ncclGetErrorString(r));
}

}  // namespace detail
}  // namespace pp3d
