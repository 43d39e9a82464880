// Background progress for MpiCommunicator's non-blocking operations.
//
// Open MPI (4.1, "OMPI progress: no") advances non-blocking collectives
// (libnbc schedules: the rounds of an MPI_Iallreduce / MPI_Ireduce_scatter)
// only inside MPI calls made by the application. A reduction launched during
// the backward would otherwise sit idle through every GEMM until the next
// poll, and most of it would run exposed in the final wait. While at least one
// MpiHandle is outstanding, a helper thread calls MPI_Iprobe on MPI_COMM_SELF
// (which never matches anything here but runs opal_progress(), the progress
// engine of every pending request) every PP3D_MPI_PROGRESS_US microseconds
// (default 50), and sleeps on a condition variable otherwise. It never touches
// the requests themselves (their owner tests and completes them), so the only
// requirement is MPI_THREAD_MULTIPLE, which pp3d::init_world asks for; without
// it, or with PP3D_MPI_PROGRESS_THREAD=0, there is no thread (progress then
// happens only in the owner's polls and waits). mpi_progress_set_enabled(false)
// stops new operations from using it (benchmarks compare both in one process).
#include <chrono>
#include <condition_variable>
#include <cstdlib>
#include <mutex>
#include <string>
#include <thread>

#include "comm/mpi_detail.h"

namespace pp3d::detail {

namespace {

class ProgressPump {
 public:
  static ProgressPump& instance() {
    static ProgressPump pump;
    return pump;
  }

  bool acquire() {
    std::lock_guard<std::mutex> lk(mu_);
    if (!decided_) decide();
    if (!enabled_ || !runtime_on_ || stop_) return false;
    if (!thread_.joinable()) thread_ = std::thread([this] { loop(); });
    if (active_++ == 0) cv_.notify_one();
    return true;
  }

  void set_enabled(bool on) {
    std::lock_guard<std::mutex> lk(mu_);
    runtime_on_ = on;
  }

  void release() {
    std::lock_guard<std::mutex> lk(mu_);
    if (active_ > 0) --active_;
  }

  // Stops and joins the thread (idempotent). MPI_Finalize must not run while
  // it may be inside MPI_Iprobe: finalize unloads Open MPI's components, and
  // a thread still executing their code then crashes the process at exit.
  void shutdown() {
    {
      std::lock_guard<std::mutex> lk(mu_);
      stop_ = true;
    }
    cv_.notify_all();
    if (thread_.joinable()) thread_.join();
  }

  ~ProgressPump() { shutdown(); }

 private:
  ProgressPump() = default;

  void decide() {
    decided_ = true;
    const char* env = std::getenv("PP3D_MPI_PROGRESS_THREAD");
    if (env != nullptr && std::string(env) == "0") return;
    int provided = MPI_THREAD_SINGLE;
    MPI_Query_thread(&provided);
    if (provided != MPI_THREAD_MULTIPLE) return;
    if (const char* us = std::getenv("PP3D_MPI_PROGRESS_US")) {
      const long v = std::strtol(us, nullptr, 10);
      if (v >= 0) interval_ = std::chrono::microseconds(v);
    }
    enabled_ = true;
  }

  void loop() {
    std::unique_lock<std::mutex> lk(mu_);
    for (;;) {
      cv_.wait(lk, [this] { return stop_ || active_ > 0; });
      if (stop_) return;
      lk.unlock();
      int finalized = 0;
      MPI_Finalized(&finalized);
      if (!finalized) {
        int flag = 0;
        MPI_Iprobe(MPI_ANY_SOURCE, MPI_ANY_TAG, MPI_COMM_SELF, &flag, MPI_STATUS_IGNORE);
      }
      if (interval_.count() > 0) std::this_thread::sleep_for(interval_);
      else std::this_thread::yield();
      lk.lock();
    }
  }

  std::mutex mu_;
  std::condition_variable cv_;
  std::thread thread_;
  int active_ = 0;
  bool decided_ = false, enabled_ = false, stop_ = false, runtime_on_ = true;
  std::chrono::microseconds interval_{50};
};

}  // namespace

bool mpi_progress_acquire() { return ProgressPump::instance().acquire(); }
void mpi_progress_release() { ProgressPump::instance().release(); }
void mpi_progress_set_enabled(bool on) { ProgressPump::instance().set_enabled(on); }
void mpi_progress_shutdown() { ProgressPump::instance().shutdown(); }

}  // namespace pp3d::detail
