// Run under mpirun (any number of ranks; registered with 8 and 3): init_world()
// must pick MPI; every collective x dtype x odd size (sync and async) against
// the serial computation, p2p and batch, split, ProcessGrid memberships for
// several layouts, and clear errors for bad arguments. Prints failures and
// exits non-zero if any rank failed.
#include <algorithm>
#include <cstdio>
#include <string>

#include "dist/comm_checks.h"
#include "pp3d/comm/bootstrap.h"
#include "pp3d/comm/mpi_communicator.h"
#include "pp3d/parallel/process_grid.h"

using namespace pp3d;

namespace {

std::string check_grid(const std::shared_ptr<Communicator>& world, int tp, int pp) {
  ProcessGrid grid(world, tp, pp);
  const int r = world->rank();
  if (ProcessGrid::rank_of(grid.tp_rank(), grid.dp_rank(), grid.pp_rank(), tp, grid.dp()) != r)
    return "grid coordinates do not give back the rank";
  const std::pair<GroupKind, std::shared_ptr<Communicator>> kinds[] = {
      {GroupKind::TP, grid.tp_group()}, {GroupKind::DP, grid.dp_group()}, {GroupKind::PP, grid.pp_group()},
      {GroupKind::MP, grid.mp_group()}, {GroupKind::Embedding, grid.embedding_group()}};
  for (const auto& [kind, c] : kinds) {
    std::vector<int> expect;
    for (const auto& g : ProcessGrid::group_ranks(world->size(), tp, pp, kind))
      if (std::find(g.begin(), g.end(), r) != g.end()) expect = g;
    if (expect.empty()) {
      if (c != nullptr) return fmt::format("{}: rank {} should be in no group", group_kind_name(kind), r);
      continue;
    }
    if (!c || c->size() != static_cast<int>(expect.size()))
      return fmt::format("{} ({}): wrong group size", group_kind_name(kind), grid.str());
    Tensor me = Tensor::from_vector_i32({1}, {r});
    Tensor all = Tensor::zeros({c->size()}, DType::I32);
    c->all_gather(me, all);
    for (int i = 0; i < c->size(); ++i)
      if (all.data<int32_t>()[i] != expect[static_cast<std::size_t>(i)] ||
          c->global_rank(i) != expect[static_cast<std::size_t>(i)])
        return fmt::format("{} ({}): member {} is {}, expected {}", c->name(), grid.str(), i, all.data<int32_t>()[i],
                           expect[static_cast<std::size_t>(i)]);
  }
  return "";
}

std::string check_errors(Communicator& c) {
  // Bad arguments fail locally and clearly (no communication happens).
  Tensor a = Tensor::zeros({5});
  Tensor b = Tensor::zeros({5 * c.size() + 1});
  try {
    c.all_gather(a, b);
    return "all_gather with a wrong output size did not throw";
  } catch (const Error& e) {
    if (std::string(e.what()).find("all_gather on group 'world'") == std::string::npos) return e.what();
  }
  try {
    c.send(a, c.size());
    return "send to a rank out of range did not throw";
  } catch (const Error&) {
  }
  if (c.size() >= 2) {
    // Sender and receiver disagree on the size: the receiver names it.
    if (c.rank() == 0) c.send(Tensor::zeros({3}), 1, 9);
    if (c.rank() == 1) {
      Tensor small = Tensor::zeros({4});
      try {
        c.recv(small, 0, 9);
        return "recv of a different size did not throw";
      } catch (const Error& e) {
        if (std::string(e.what()).find("received 3 elements, expected 4") == std::string::npos) return e.what();
      }
    }
  }
  return "";
}

}  // namespace

int main() {
  auto world = init_world();
  const int r = world->rank();
  std::vector<std::string> failures;
  auto run = [&](const char* name, const std::string& err) {
    if (!err.empty()) failures.push_back(fmt::format("{}: {}", name, err));
  };
  try {
    if (!dynamic_cast<MpiCommunicator*>(world.get())) failures.push_back("init_world did not pick MPI under mpirun");
    if (detect_launch_mode() != LaunchMode::Mpi) failures.push_back("detect_launch_mode != mpi");
    const std::vector<int64_t> sizes{1, 7, 1003, 65537};
    run("all_reduce", test::check_all_reduce(*world, sizes, 1));
    run("reduce_scatter", test::check_reduce_scatter(*world, {1, 3, 257, 4099}, 2));
    run("all_gather/broadcast", test::check_all_gather_broadcast(*world, sizes, 3));
    run("p2p", test::check_p2p(*world, sizes, 4));
    run("split", test::check_split(*world));
    run("errors", check_errors(*world));
    // A sub-group runs the same checks (collectives over split communicators).
    auto half = world->split(r < world->size() / 2 ? 0 : 1, r, "half");
    run("half all_reduce", test::check_all_reduce(*half, {5, 333}, 5));
    run("half p2p", test::check_p2p(*half, {5, 333}, 6));
    const int n = world->size();
    for (auto [tp, pp] : std::vector<std::pair<int, int>>{{1, 1}, {2, 2}, {2, 1}, {1, 2}, {2, 4}, {4, 2}, {1, 8}, {8, 1}, {1, 3}})
      if (n % (tp * pp) == 0) run(fmt::format("grid tp={} pp={}", tp, pp).c_str(), check_grid(world, tp, pp));
    world->barrier();
  } catch (const std::exception& e) {
    failures.push_back(std::string("exception: ") + e.what());
  }
  for (const auto& f : failures) std::fprintf(stderr, "[rank %d] FAIL %s\n", r, f.c_str());
  // Every rank learns whether any rank failed.
  Tensor bad = Tensor::from_vector_i32({1}, {failures.empty() ? 0 : 1});
  try {
    world->all_reduce(bad, ReduceOp::Max);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "[rank %d] final all_reduce: %s\n", r, e.what());
    return 1;
  }
  const bool ok = bad.data<int32_t>()[0] == 0;
  if (r == 0) std::printf("comm_mpi_test: %d ranks: %s\n", world->size(), ok ? "PASS" : "FAIL");
  finalize_world();
  return ok ? 0 : 1;
}
