// The dead-peer test program (driven by run_dead_peer.sh under mpirun -n 4,
// PP3D_COMM_TIMEOUT=5). Rank 2 is the victim:
//   kill:  after a few good all-reduces, rank 2 SIGKILLs itself while the
//          others enter the next all_reduce on 'world';
//   stall: rank 2 sleeps; rank 3 waits in recv from rank 2, ranks 0 and 1 in
//          a barrier on 'world'.
// Each survivor writes the error it got and the seconds it took to
// <outdir>/rank<r>.txt and exits 3 (no MPI_Finalize: a peer is gone).
#include <unistd.h>

#include <chrono>
#include <csignal>
#include <cstdio>
#include <string>
#include <thread>

#include "pp3d/comm/bootstrap.h"

using namespace pp3d;

int main(int argc, char** argv) {
  if (argc != 3) {
    std::fprintf(stderr, "usage: comm_dead_peer kill|stall OUTDIR\n");
    return 2;
  }
  const std::string mode = argv[1], outdir = argv[2];
  auto world = init_world();
  const int r = world->rank();
  Tensor t = Tensor::zeros({1000});
  for (int i = 0; i < 3; ++i) world->all_reduce(t);
  const auto t0 = std::chrono::steady_clock::now();
  std::string what = "no error";
  try {
    if (r == 2) {
      if (mode == "kill") raise(SIGKILL);
      std::this_thread::sleep_for(std::chrono::seconds(60));  // killed by mpirun long before
      _exit(0);
    }
    if (mode == "kill") {
      world->all_reduce(t);
    } else if (r == 3) {
      world->recv(t, 2, 0);
    } else {
      world->barrier();
    }
  } catch (const std::exception& e) {
    what = e.what();
  }
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  const std::string path = outdir + "/rank" + std::to_string(r) + ".txt";
  if (FILE* f = std::fopen(path.c_str(), "w")) {
    std::fprintf(f, "%.3f\n%s\n", secs, what.c_str());
    std::fclose(f);
  }
  std::fprintf(stderr, "[rank %d] after %.1f s: %s\n", r, secs, what.c_str());
  std::fflush(stderr);
  // The survivors' deadlines expire together; without recovery mpirun kills the
  // job as soon as the first of them exits, so give the others time to write
  // their files first (their seconds were measured above).
  std::this_thread::sleep_for(std::chrono::seconds(2));
  _exit(3);
}
