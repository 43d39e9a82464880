// Bootstrap: creates the world communicator from the way the process was launched.
//
//   mpirun / srun (OMPI_COMM_WORLD_SIZE, PMI_SIZE/PMI_RANK, PMIX_RANK, or
//   SLURM_NTASKS>1 with SLURM_PROCID)      -> MPI_Init_thread + MpiCommunicator
//   torchrun-style RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT (no MPI):
//       WORLD_SIZE == 1                    -> LocalCommunicator
//       otherwise                          -> TcpStore + TcpCommunicator
//   nothing                                -> LocalCommunicator
// PP3D_LAUNCHER=mpi|tcp|local forces a mode. init_world() also sets the rank
// used by errors and logs, and the OpenMP threads per rank when OMP_NUM_THREADS
// is unset (apply_thread_default below). finalize_world() (also run at exit) meets the other
// ranks, closes the store and calls MPI_Finalize if pp3d initialised MPI
// (skipped after a communication failure, where it would wait for the dead peer).
// Call from the main thread; the returned world is shared by the caller.
#pragma once

#include <memory>
#include <string>

#include "pp3d/comm/communicator.h"
#include "pp3d/comm/tcp_store.h"

namespace pp3d {

enum class LaunchMode { Auto, Local, Mpi, Tcp };

struct InitOptions {
  LaunchMode mode = LaunchMode::Auto;  // Auto: detect (PP3D_LAUNCHER overrides detection)
};

// Detected launch mode from the environment (never Auto).
LaunchMode detect_launch_mode();
const char* launch_mode_name(LaunchMode m);

// Creates (once) and returns the world communicator; later calls return the same one.
std::shared_ptr<Communicator> init_world(const InitOptions& opts = {});
// The world made by init_world (nullptr before).
std::shared_ptr<Communicator> world();
// The rendezvous store in TCP mode (nullptr otherwise): generic bytes, e.g. the
// NCCL unique id.
std::shared_ptr<TcpStore> world_store();
// This process's index among the ranks on its node, for picking a GPU:
// OMPI_COMM_WORLD_LOCAL_RANK, MPI_LOCALRANKID, SLURM_LOCALID, LOCAL_RANK, else 0.
int local_rank();
// Number of ranks on this node (OMPI_COMM_WORLD_LOCAL_SIZE, MPI_LOCALNRANKS,
// LOCAL_WORLD_SIZE, SLURM_NTASKS_PER_NODE), else 1.
int local_world_size();
// OpenMP threads per rank when the user did not choose: max(1, usable_cores / local_ranks),
// so ranks sharing a node do not oversubscribe its cores (4 ranks x 2 spinning
// threads on 2 cores ran 70x slower than 1 thread each).
int default_threads_per_rank(int usable_cores, int local_ranks);
// CPUs this process may run on (its sched_getaffinity mask), at least 1.
int usable_cores();

struct ThreadChoice {
  int threads = 1;         // OpenMP threads in effect for the calling thread
  bool from_user = false;  // OMP_NUM_THREADS was set: left as the user chose
  int usable_cores = 1;
  int local_ranks = 1;
};
// Unless OMP_NUM_THREADS is set (non-empty), calls omp_set_num_threads(
// default_threads_per_rank(usable_cores(), local_ranks)) and logs the choice
// (info: rank 0 only). init_world() calls it with the ranks on this node.
ThreadChoice apply_thread_default(int local_ranks);

// Releases the world: a barrier (with deadline) so rank 0's store outlives the
// others' use, then MPI_Finalize if pp3d called MPI_Init. Idempotent; errors
// are logged, not thrown.
void finalize_world();

}  // namespace pp3d
