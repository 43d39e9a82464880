// MpiCommunicator::Impl, the deadline-polling wait, and MpiHandle.
#include <chrono>
#include <thread>

#include "comm/comm_util.h"
#include "comm/mpi_detail.h"
#include "pp3d/core/log.h"

namespace pp3d {

MpiCommunicator::Impl::Impl(MPI_Comm c, std::string group_name) : comm(c), name(std::move(group_name)) {
  MPI_Comm_set_errhandler(comm, MPI_ERRORS_RETURN);
  MPI_Comm_rank(comm, &rank);
  MPI_Comm_size(comm, &size);
  int* ub = nullptr;
  int flag = 0;
  MPI_Comm_get_attr(comm, MPI_TAG_UB, &ub, &flag);
  if (flag && ub != nullptr) tag_ub = *ub;
  MPI_Group mine, world;
  MPI_Comm_group(comm, &mine);
  MPI_Comm_group(MPI_COMM_WORLD, &world);
  std::vector<int> local(static_cast<std::size_t>(size));
  for (int r = 0; r < size; ++r) local[static_cast<std::size_t>(r)] = r;
  global.resize(static_cast<std::size_t>(size));
  MPI_Group_translate_ranks(mine, size, local.data(), world, global.data());
  MPI_Group_free(&mine);
  MPI_Group_free(&world);
}

MpiCommunicator::Impl::~Impl() {
  int finalized = 0;
  MPI_Finalized(&finalized);
  if (!broken.empty()) {
    // Requests are still pending on these buffers: never free them.
    (void)new std::vector<Tensor>(std::move(graveyard));
    return;
  }
  if (!finalized && comm != MPI_COMM_NULL) MPI_Comm_free(&comm);
}

void MpiCommunicator::Impl::check_usable(const char* op) const {
  PP3D_CHECK(broken.empty(), "{} on group '{}': the group is unusable after an earlier failure ({})", op, name,
             broken);
}

void MpiCommunicator::Impl::fail(const std::string& why, std::vector<Tensor> keep) {
  if (broken.empty()) broken = why;
  for (auto& t : keep) graveyard.push_back(std::move(t));
  detail::mark_comm_failed();
}

namespace detail {

void check_mpi(int rc, const char* call, const MpiCommunicator::Impl& impl, const std::string& op) {
  if (rc == MPI_SUCCESS) [[likely]] return;
  char msg[MPI_MAX_ERROR_STRING] = {};
  int len = 0;
  MPI_Error_string(rc, msg, &len);
  PP3D_FAIL("{} on group '{}' (rank {} of {}): {} failed: {} (MPI error {})", op, impl.name, impl.rank, impl.size,
            call, std::string(msg, static_cast<std::size_t>(len)), rc);
}

MPI_Datatype mpi_dtype(DType t) {
  switch (t) {
    case DType::F32: return MPI_FLOAT;
    case DType::BF16: return MPI_UINT16_T;
    case DType::F16: return MPI_UINT16_T;
    case DType::I32: return MPI_INT32_T;
  }
  return MPI_BYTE;
}

MPI_Op mpi_op(ReduceOp op) { return op == ReduceOp::Max ? MPI_MAX : MPI_SUM; }

namespace {
std::string timeout_message(const MpiCommunicator::Impl& impl, const MpiOpInfo& info, double timeout) {
  std::vector<int> peers;
  for (int p : info.peers) peers.push_back(impl.global[static_cast<std::size_t>(p)]);
  const std::string head = fmt::format("{} on group '{}' ({} ranks, {}) did not complete within {} s "
                                       "(PP3D_COMM_TIMEOUT)",
                                       info.op, impl.name, impl.size, info.detail, timeout);
  if (!info.collective) {
    return fmt::format("{}: peer global rank(s) {} did not arrive (local rank(s) {} of '{}'); the peer has "
                       "probably died, stalled, or posted a different operation",
                       head, ranks_str(peers), ranks_str(info.peers), impl.name);
  }
  return fmt::format("{}: one or more of global ranks {} did not arrive; a rank has probably died, stalled, or "
                     "called a different collective",
                     head, ranks_str(peers));
}
}  // namespace

void mpi_wait_all(std::vector<MPI_Request>& reqs, std::vector<MPI_Status>* statuses, MpiCommunicator::Impl& impl,
                  const MpiOpInfo& info, const std::vector<Tensor>& keep) {
  if (reqs.empty()) return;
  const double timeout = comm_timeout_seconds();
  const auto t0 = std::chrono::steady_clock::now();
  const int n = static_cast<int>(reqs.size());
  if (statuses) statuses->resize(reqs.size());
  for (;;) {
    int flag = 0;
    const int rc = MPI_Testall(n, reqs.data(), &flag, statuses ? statuses->data() : MPI_STATUSES_IGNORE);
    if (rc != MPI_SUCCESS) {
      impl.fail(fmt::format("{} failed", info.op), keep);
      check_mpi(rc, "MPI_Testall", impl, info.op);
    }
    if (flag) return;
    const double el = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    if (el > timeout) {
      const std::string msg = timeout_message(impl, info, timeout);
      impl.fail(fmt::format("{} timed out", info.op), keep);
      logger()->error("{}", msg);
      PP3D_FAIL("{}", msg);
    }
    if (el < 0.05) {  // libnbc progresses only inside MPI_Test: poll hard at first
      std::this_thread::yield();
    } else if (el < 1.0) {
      std::this_thread::sleep_for(std::chrono::microseconds(20));
    } else {
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
  }
}

MpiHandle::MpiHandle(MpiCommunicator::Impl& impl, MpiOpInfo info, std::vector<MPI_Request> reqs,
                     std::vector<Tensor> keep, std::function<void()> finish)
    : impl_(impl), info_(std::move(info)), reqs_(std::move(reqs)), keep_(std::move(keep)),
      finish_(std::move(finish)) {
  pumped_ = mpi_progress_acquire();
}

MpiHandle::~MpiHandle() {
  if (done_) return;
  try {
    wait();
  } catch (const std::exception& e) {
    logger()->error("unfinished {} handle on group '{}' destroyed: {}", info_.op, impl_.name, e.what());
  }
}

void MpiHandle::complete() {
  done_ = true;
  if (pumped_) mpi_progress_release();
  pumped_ = false;
  if (finish_) finish_();
  keep_.clear();
}

void MpiHandle::wait() {
  if (done_) return;
  try {
    impl_.check_usable(info_.op.c_str());
    mpi_wait_all(reqs_, nullptr, impl_, info_, keep_);
  } catch (...) {
    done_ = true;  // abandoned: its buffers now live in impl_.graveyard
    keep_.clear();
    if (pumped_) mpi_progress_release();
    pumped_ = false;
    throw;
  }
  complete();
}

bool MpiHandle::test() {
  if (done_) return true;
  impl_.check_usable(info_.op.c_str());
  int flag = 0;
  const int rc = MPI_Testall(static_cast<int>(reqs_.size()), reqs_.data(), &flag, MPI_STATUSES_IGNORE);
  if (rc != MPI_SUCCESS) {
    impl_.fail(fmt::format("{} failed", info_.op), keep_);
    check_mpi(rc, "MPI_Testall", impl_, info_.op);
  }
  if (flag) complete();
  return done_;
}

}  // namespace detail
}  // namespace pp3d
