// SIGINT / SIGTERM handlers of Trainer::run (see trainer_signals.h).
#include "train/trainer_signals.h"

#include "pp3d/core/error.h"

namespace pp3d::detail {

namespace {

volatile std::sig_atomic_t g_pending = 0;

// Only async-signal-safe calls: a store, signal() and raise().
extern "C" void on_stop_signal(int sig) {
  if (g_pending != 0) {  // second signal: do what it would have done without us
    std::signal(sig, SIG_DFL);
    std::raise(sig);
    return;
  }
  g_pending = sig;
}

}  // namespace

StopSignalGuard::StopSignalGuard() {
  g_pending = 0;
  struct sigaction sa {};
  sa.sa_handler = on_stop_signal;
  sigemptyset(&sa.sa_mask);
  sa.sa_flags = SA_RESTART;  // blocking calls (MPI progress, file I/O) continue
  PP3D_CHECK(sigaction(SIGINT, &sa, &old_int_) == 0 && sigaction(SIGTERM, &sa, &old_term_) == 0,
             "cannot install the SIGINT/SIGTERM handlers");
}

StopSignalGuard::~StopSignalGuard() {
  sigaction(SIGINT, &old_int_, nullptr);
  sigaction(SIGTERM, &old_term_, nullptr);
}

int StopSignalGuard::pending() { return static_cast<int>(g_pending); }

const char* stop_signal_name(int sig) {
  switch (sig) {
    case SIGINT: return "SIGINT";
    case SIGTERM: return "SIGTERM";
    default: return "a stop signal";
  }
}

}  // namespace pp3d::detail
