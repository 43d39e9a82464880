// SIGINT / SIGTERM -> "stop at the next step boundary" for Trainer::run.
//
// A StopSignalGuard installs async-signal-safe handlers (they only store the
// signal number in a volatile std::sig_atomic_t) for its lifetime and restores
// the previous handlers when destroyed. A second signal while a stop is
// already pending restores the default action and re-raises it (a second
// Ctrl-C kills at once). Process-wide state: at most one guard at a time, used
// from the training thread; the handlers themselves may run on any thread.
#pragma once

#include <csignal>

namespace pp3d::detail {

class StopSignalGuard {
 public:
  // Installs the handlers and clears any earlier pending signal.
  StopSignalGuard();
  ~StopSignalGuard();
  StopSignalGuard(const StopSignalGuard&) = delete;
  StopSignalGuard& operator=(const StopSignalGuard&) = delete;

  // The first SIGINT / SIGTERM received since construction, 0 when none.
  static int pending();

 private:
  struct sigaction old_int_ {}, old_term_ {};
};

// "SIGINT", "SIGTERM", else "signal <n>".
const char* stop_signal_name(int sig);

}  // namespace pp3d::detail
