// OpenMP threads per rank when OMP_NUM_THREADS is unset (see bootstrap.h).
#include <omp.h>
#include <sched.h>

#include <algorithm>
#include <cstdlib>
#include <thread>

#include "pp3d/comm/bootstrap.h"
#include "pp3d/core/error.h"
#include "pp3d/core/log.h"

namespace pp3d {

int default_threads_per_rank(int usable_cores, int local_ranks) {
  PP3D_CHECK(usable_cores >= 1 && local_ranks >= 1, "default_threads_per_rank({}, {}): both must be >= 1",
             usable_cores, local_ranks);
  return std::max(1, usable_cores / local_ranks);
}

int usable_cores() {
  cpu_set_t set;
  CPU_ZERO(&set);
  if (sched_getaffinity(0, sizeof(set), &set) == 0) {
    const int n = CPU_COUNT(&set);
    if (n >= 1) return n;
  }
  return std::max(1, static_cast<int>(std::thread::hardware_concurrency()));
}

ThreadChoice apply_thread_default(int local_ranks) {
  ThreadChoice c;
  c.usable_cores = usable_cores();
  c.local_ranks = std::max(1, local_ranks);
  const char* user = std::getenv("OMP_NUM_THREADS");
  if (user != nullptr && *user != '\0') {
    c.from_user = true;
    c.threads = omp_get_max_threads();
    logger()->debug("OpenMP threads per rank: {} (OMP_NUM_THREADS={})", c.threads, user);
    return c;
  }
  c.threads = default_threads_per_rank(c.usable_cores, c.local_ranks);
  // Sets the main thread's team size, used by Eigen and pp3d's CPU kernels; the
  // runtime read OMP_NUM_THREADS at load time, so setenv would be too late.
  omp_set_num_threads(c.threads);
  if (c.local_ranks > 1) {
    logger()->info("OpenMP threads per rank: {} ({} usable cores / {} ranks on this node); set OMP_NUM_THREADS "
                   "to choose", c.threads, c.usable_cores, c.local_ranks);
  }
  return c;
}

}  // namespace pp3d
