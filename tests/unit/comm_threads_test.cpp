// OpenMP threads per rank when OMP_NUM_THREADS is unset (issue 18): max(1,
// usable cores / ranks on the node), the affinity mask counted, the user's
// OMP_NUM_THREADS left alone.
#include <omp.h>
#include <sched.h>

#include <catch2/catch.hpp>
#include <cstdlib>
#include <optional>
#include <string>
#include <thread>

#include "pp3d/comm/bootstrap.h"
#include "pp3d/core/error.h"

using namespace pp3d;

namespace {

// Sets (or with nullopt unsets) OMP_NUM_THREADS for the scope and restores it
// and the OpenMP thread count afterwards.
struct ScopedOmpEnv {
  std::optional<std::string> saved;
  int threads_before = omp_get_max_threads();
  explicit ScopedOmpEnv(std::optional<std::string> value) {
    if (const char* v = std::getenv("OMP_NUM_THREADS")) saved = v;
    if (value) setenv("OMP_NUM_THREADS", value->c_str(), 1);
    else unsetenv("OMP_NUM_THREADS");
  }
  ~ScopedOmpEnv() {
    if (saved) setenv("OMP_NUM_THREADS", saved->c_str(), 1);
    else unsetenv("OMP_NUM_THREADS");
    omp_set_num_threads(threads_before);
  }
};

}  // namespace

TEST_CASE("threads per rank: usable cores divided by the ranks on the node", "[comm][threads]") {
  REQUIRE(default_threads_per_rank(2, 4) == 1);   // the case: 4 ranks on 2 cores
  REQUIRE(default_threads_per_rank(16, 4) == 4);
  REQUIRE(default_threads_per_rank(7, 2) == 3);   // rounds down: never more threads than cores
  REQUIRE(default_threads_per_rank(8, 1) == 8);
  REQUIRE(default_threads_per_rank(1, 8) == 1);
  REQUIRE_THROWS_AS(default_threads_per_rank(0, 1), Error);
  REQUIRE_THROWS_AS(default_threads_per_rank(4, 0), Error);
}

TEST_CASE("threads per rank: usable cores follow the affinity mask", "[comm][threads]") {
  cpu_set_t mine;
  REQUIRE(sched_getaffinity(0, sizeof(mine), &mine) == 0);
  REQUIRE(usable_cores() == CPU_COUNT(&mine));
  // A thread pinned to one CPU sees one usable core, and (one rank on the node)
  // gets one OpenMP thread, however many cores the machine has.
  int first_cpu = 0;
  while (!CPU_ISSET(first_cpu, &mine)) ++first_cpu;
  int cores_seen = -1, threads_chosen = -1;
  ScopedOmpEnv unset(std::nullopt);
  std::thread t([&] {
    cpu_set_t one;
    CPU_ZERO(&one);
    CPU_SET(first_cpu, &one);
    if (sched_setaffinity(0, sizeof(one), &one) != 0) return;
    cores_seen = usable_cores();
    threads_chosen = apply_thread_default(1).threads;
  });
  t.join();
  REQUIRE(cores_seen == 1);
  REQUIRE(threads_chosen == 1);
}

TEST_CASE("threads per rank: applied when OMP_NUM_THREADS is unset or empty", "[comm][threads]") {
  for (std::optional<std::string> value : {std::optional<std::string>{}, std::optional<std::string>{""}}) {
    ScopedOmpEnv env(value);
    omp_set_num_threads(usable_cores() + 3);  // something the default would not choose
    const ThreadChoice c = apply_thread_default(4);
    REQUIRE_FALSE(c.from_user);
    REQUIRE(c.local_ranks == 4);
    REQUIRE(c.usable_cores == usable_cores());
    REQUIRE(c.threads == default_threads_per_rank(usable_cores(), 4));
    REQUIRE(omp_get_max_threads() == c.threads);
  }
}

TEST_CASE("threads per rank: the user's OMP_NUM_THREADS wins", "[comm][threads]") {
  ScopedOmpEnv env(std::string("3"));
  omp_set_num_threads(3);  // what the runtime read from the variable at start-up
  const ThreadChoice c = apply_thread_default(64);
  REQUIRE(c.from_user);
  REQUIRE(c.threads == 3);
  REQUIRE(omp_get_max_threads() == 3);
}
