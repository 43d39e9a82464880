// Internals of MpiCommunicator (includes <mpi.h>; never included by public
// headers): the pimpl, the deadline-polling wait and the async handle.
#pragma once

#include <mpi.h>

#include <functional>
#include <string>
#include <vector>

#include "pp3d/comm/mpi_communicator.h"

namespace pp3d {

struct MpiCommunicator::Impl {
  MPI_Comm comm = MPI_COMM_NULL;
  std::string name;
  int rank = 0;
  int size = 1;
  int tag_ub = 32767;
  std::vector<int> global;           // global (world) rank of each member
  std::string broken;                // non-empty after a timeout / MPI error
  std::vector<Tensor> graveyard;     // buffers of requests abandoned on timeout

  // Takes ownership of `c` (a communicator this process may free).
  Impl(MPI_Comm c, std::string group_name);
  ~Impl();
  // Throws if an earlier call failed (pending requests make the group unusable).
  void check_usable(const char* op) const;
  // Records a failure: the group refuses further calls, MPI_Finalize is skipped.
  void fail(const std::string& why, std::vector<Tensor> keep);
};

namespace detail {

// What an operation is, for error messages.
struct MpiOpInfo {
  std::string op;           // "all_reduce", "recv", ...
  std::string detail;       // "f32[1000]", "tag 3, f32[4, 5]"
  std::vector<int> peers;   // local ranks whose arrival is awaited
  bool collective = true;
};

// Throws a pp3d::Error naming the call and MPI's message when rc != MPI_SUCCESS.
void check_mpi(int rc, const char* call, const MpiCommunicator::Impl& impl, const std::string& op);

// Polls the requests (MPI_Testall + yield/sleep) until all complete or the
// deadline (comm_timeout_seconds() from now) passes; then fails `impl` and
// throws naming the operation, the group and the peers. `keep` are the
// buffers the requests use (kept alive if abandoned).
void mpi_wait_all(std::vector<MPI_Request>& reqs, std::vector<MPI_Status>* statuses,
                  MpiCommunicator::Impl& impl, const MpiOpInfo& info, const std::vector<Tensor>& keep);

// The background progress thread (mpi_progress.cpp): acquire() while a
// non-blocking operation is outstanding (returns false when there is no
// thread: PP3D_MPI_PROGRESS_THREAD=0 or no MPI_THREAD_MULTIPLE), release() once after.
bool mpi_progress_acquire();
void mpi_progress_release();
// Benchmarks: operations started after set_enabled(false) get no progress thread.
void mpi_progress_set_enabled(bool on);
// Stops and joins the progress thread for good (before MPI_Finalize).
void mpi_progress_shutdown();

MPI_Datatype mpi_dtype(DType t);
MPI_Op mpi_op(ReduceOp op);

// Handle of a started non-blocking operation. The communicator must outlive it.
class MpiHandle final : public CommHandle {
 public:
  MpiHandle(MpiCommunicator::Impl& impl, MpiOpInfo info, std::vector<MPI_Request> reqs,
            std::vector<Tensor> keep, std::function<void()> finish);
  ~MpiHandle() override;
  void wait() override;
  bool test() override;

 private:
  void complete();
  MpiCommunicator::Impl& impl_;
  MpiOpInfo info_;
  std::vector<MPI_Request> reqs_;
  std::vector<Tensor> keep_;
  std::function<void()> finish_;
  bool done_ = false;
  bool pumped_ = false;  // holds a reference on the progress thread
};

}  // namespace detail
}  // namespace pp3d
