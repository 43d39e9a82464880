#include "pp3d/comm/bootstrap.h"

#include <mpi.h>

#include <unistd.h>

#include <cstdlib>
#include <mutex>
#include <string>

#include "comm/comm_util.h"
#include "comm/mpi_detail.h"
#include "pp3d/comm/local_communicator.h"
#include "pp3d/comm/mpi_communicator.h"
#include "pp3d/comm/tcp_communicator.h"
#include "pp3d/core/log.h"

namespace pp3d {

namespace {

struct WorldState {
  std::mutex mu;
  std::shared_ptr<Communicator> world;
  std::shared_ptr<TcpStore> store;
  bool we_initialised_mpi = false;
  bool finalized = false;
  bool atexit_registered = false;
};
WorldState& state() {
  static auto* s = new WorldState;  // leaked: usable from atexit handlers
  return *s;
}

const char* env(const char* name) {
  const char* v = std::getenv(name);
  return (v != nullptr && *v != '\0') ? v : nullptr;
}

int env_int(const char* name, int fallback) {
  const char* v = env(name);
  if (v == nullptr) return fallback;
  char* end = nullptr;
  const long x = std::strtol(v, &end, 10);
  PP3D_CHECK(end != v && *end == '\0' && x >= 0 && x <= 1 << 30, "environment variable {}='{}' is not a "
             "non-negative integer", name, v);
  return static_cast<int>(x);
}

std::shared_ptr<Communicator> make_mpi_world(WorldState& s) {
  int initialized = 0;
  MPI_Initialized(&initialized);
  if (!initialized) {
    int provided = 0;
    const int rc = MPI_Init_thread(nullptr, nullptr, MPI_THREAD_MULTIPLE, &provided);
    PP3D_CHECK(rc == MPI_SUCCESS, "MPI_Init_thread failed (MPI error {})", rc);
    s.we_initialised_mpi = true;
    if (provided < MPI_THREAD_SERIALIZED) {
      logger()->warn("MPI provides thread level {} (< MPI_THREAD_SERIALIZED): use communicators from the main "
                     "thread only", provided);
    }
  }
  return MpiCommunicator::world();
}

std::shared_ptr<Communicator> make_tcp_world(WorldState& s) {
  PP3D_CHECK(env("RANK") && env("WORLD_SIZE"),
             "torchrun-style launch needs RANK and WORLD_SIZE (and MASTER_ADDR, MASTER_PORT) in the environment");
  const int rank = env_int("RANK", 0);
  const int world = env_int("WORLD_SIZE", 1);
  PP3D_CHECK(world >= 1 && rank < world, "RANK={} is out of range for WORLD_SIZE={}", rank, world);
  if (world == 1) return std::make_shared<LocalCommunicator>("world", 0);
  const char* addr = env("MASTER_ADDR");
  PP3D_CHECK(addr != nullptr, "WORLD_SIZE={} needs MASTER_ADDR (the host of rank 0) and MASTER_PORT", world);
  const int port = env_int("MASTER_PORT", 29500);
  PP3D_CHECK(port > 0 && port < 65536, "MASTER_PORT={} is not a valid TCP port", port);
  s.store = std::make_shared<TcpStore>(addr, port, rank, world);
  s.store->barrier();  // every rank present (the error names those that are not)
  return std::make_shared<TcpCommunicator>(s.store, "world");
}

// Ranks on this node from the launcher's environment; 0 when it does not say.
int local_size_from_env() {
  for (const char* n : {"OMPI_COMM_WORLD_LOCAL_SIZE", "MPI_LOCALNRANKS", "LOCAL_WORLD_SIZE", "SLURM_NTASKS_PER_NODE"})
    if (env(n)) return env_int(n, 0);
  return 0;
}

// Ranks on this node for the thread default: the launcher's variables, else MPI's
// shared-memory communicator, else ranks reporting the same host name to the store.
int ranks_on_this_node(LaunchMode mode, WorldState& s) {
  if (const int n = local_size_from_env(); n >= 1) return n;
  if (mode == LaunchMode::Mpi) {
    MPI_Comm node = MPI_COMM_NULL;
    int n = 1;
    if (MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, 0, MPI_INFO_NULL, &node) == MPI_SUCCESS) {
      MPI_Comm_size(node, &n);
      MPI_Comm_free(&node);
    }
    return n;
  }
  if (mode == LaunchMode::Tcp && s.store) {
    char host[256] = {};
    gethostname(host, sizeof(host) - 1);
    const std::string key = std::string("pp3d/ranks_on_host/") + host;
    s.store->add(key, 1);
    s.store->barrier();  // every rank has counted itself
    return static_cast<int>(s.store->add(key, 0));
  }
  return 1;
}

}  // namespace

const char* launch_mode_name(LaunchMode m) {
  switch (m) {
    case LaunchMode::Auto: return "auto";
    case LaunchMode::Local: return "local";
    case LaunchMode::Mpi: return "mpi";
    case LaunchMode::Tcp: return "tcp";
  }
  return "?";
}

LaunchMode detect_launch_mode() {
  if (const char* f = env("PP3D_LAUNCHER")) {
    const std::string v = f;
    if (v == "mpi") return LaunchMode::Mpi;
    if (v == "tcp") return LaunchMode::Tcp;
    if (v == "local") return LaunchMode::Local;
    PP3D_FAIL("PP3D_LAUNCHER='{}' is not one of mpi, tcp, local", v);
  }
  if (env("OMPI_COMM_WORLD_SIZE") || env("PMI_SIZE") || env("PMI_RANK") || env("PMIX_RANK")) return LaunchMode::Mpi;
  if (env("RANK") && env("WORLD_SIZE")) return LaunchMode::Tcp;
  if (env("SLURM_PROCID") && env_int("SLURM_NTASKS", 1) > 1) return LaunchMode::Mpi;
  return LaunchMode::Local;
}

std::shared_ptr<Communicator> init_world(const InitOptions& opts) {
  WorldState& s = state();
  std::lock_guard<std::mutex> lk(s.mu);
  if (s.world) return s.world;
  PP3D_CHECK(!s.finalized, "init_world() after finalize_world(): the world can be created once per process");
  const LaunchMode mode = opts.mode == LaunchMode::Auto ? detect_launch_mode() : opts.mode;
  switch (mode) {
    case LaunchMode::Mpi: s.world = make_mpi_world(s); break;
    case LaunchMode::Tcp: s.world = make_tcp_world(s); break;
    default: s.world = std::make_shared<LocalCommunicator>("world", 0); break;
  }
  set_error_rank(s.world->rank());
  set_log_rank(s.world->rank());
  logger()->debug("world: {} ranks, launch mode {}", s.world->size(), launch_mode_name(mode));
  apply_thread_default(ranks_on_this_node(mode, s));
  if (!s.atexit_registered) {
    s.atexit_registered = true;
    std::atexit([] { finalize_world(); });
  }
  return s.world;
}

std::shared_ptr<Communicator> world() {
  std::lock_guard<std::mutex> lk(state().mu);
  return state().world;
}

std::shared_ptr<TcpStore> world_store() {
  std::lock_guard<std::mutex> lk(state().mu);
  return state().store;
}

int local_rank() {
  for (const char* n : {"OMPI_COMM_WORLD_LOCAL_RANK", "MPI_LOCALRANKID", "SLURM_LOCALID", "LOCAL_RANK"})
    if (env(n)) return env_int(n, 0);
  return 0;
}

int local_world_size() {
  const int n = local_size_from_env();
  return n >= 1 ? n : 1;
}

void finalize_world() {
  WorldState& s = state();
  std::lock_guard<std::mutex> lk(s.mu);
  if (s.finalized) return;
  s.finalized = true;
  const bool failed = detail::comm_failed();
  try {
    if (s.store && !failed) s.store->barrier();  // rank 0's server must outlive the others' last request
  } catch (const std::exception& e) {
    logger()->error("finalize_world: {}", e.what());
  }
  s.world.reset();
  s.store.reset();
  if (s.we_initialised_mpi) {
    int finalized = 0;
    MPI_Finalized(&finalized);
    if (!finalized && !failed) {
      detail::mpi_progress_shutdown();  // no thread may be inside MPI while it finalizes
      MPI_Finalize();
    } else if (failed) {
      logger()->warn("finalize_world: skipping MPI_Finalize after a communication failure");
    }
  }
}

}  // namespace pp3d
