// torchrun-style launch without MPI (driven by run_torchrun.sh, which starts
// WORLD_SIZE processes with RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR,
// MASTER_PORT): init_world() must build a TcpCommunicator; the conformance
// checks and a ProcessGrid then run over it. Exit 0 on success.
#include <cstdio>

#include "dist/comm_checks.h"
#include "pp3d/comm/bootstrap.h"
#include "pp3d/comm/tcp_communicator.h"
#include "pp3d/parallel/process_grid.h"

using namespace pp3d;

int main() {
  try {
    auto world = init_world();
    std::string err;
    if (!dynamic_cast<TcpCommunicator*>(world.get())) err = "init_world did not pick the TCP communicator";
    if (err.empty() && world->size() != std::atoi(std::getenv("WORLD_SIZE"))) err = "wrong world size";
    if (err.empty() && local_rank() != std::atoi(std::getenv("LOCAL_RANK"))) err = "local_rank() != LOCAL_RANK";
    if (err.empty()) err = test::check_all_reduce(*world, {1, 7, 1003}, 21);
    if (err.empty()) err = test::check_reduce_scatter(*world, {1, 9}, 22);
    if (err.empty()) err = test::check_all_gather_broadcast(*world, {3, 100}, 23);
    if (err.empty()) err = test::check_p2p(*world, {3, 100}, 24);
    if (err.empty()) err = test::check_split(*world);
    if (err.empty() && world->size() % 2 == 0) {
      ProcessGrid grid(world, 2, 1);
      Tensor x = Tensor::from_vector({1}, {static_cast<float>(world->rank())});
      grid.tp_group()->all_reduce(x);
      const int base = world->rank() - grid.tp_rank();
      if (x.data<float>()[0] != static_cast<float>(2 * base + 1)) err = "tp all_reduce over the grid is wrong";
    }
    // The NCCL-id path: rank 0 publishes 128 bytes, everyone reads them.
    if (err.empty()) {
      auto store = world_store();
      if (!store) {
        err = "world_store() is null in TCP mode";
      } else {
        TcpStore::Bytes id(128);
        for (std::size_t i = 0; i < id.size(); ++i) id[i] = static_cast<uint8_t>(i ^ 0x5a);
        if (world->rank() == 0) store->set("test/unique_id", id);
        if (store->get("test/unique_id") != id) err = "unique id bytes differ";
      }
    }
    std::fprintf(stderr, "[rank %d] %s\n", world->rank(), err.empty() ? "PASS" : err.c_str());
    finalize_world();
    return err.empty() ? 0 : 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "exception: %s\n", e.what());
    return 1;
  }
}
