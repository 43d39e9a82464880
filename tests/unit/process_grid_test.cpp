// ProcessGrid: the Megatron layout as a pure function (DESIGN.md's world-16
// example), rejection of layouts that do not divide, and the real groups made
// by split over in-process TCP communicators (one thread per rank).
#include <catch2/catch.hpp>

#include <set>
#include <thread>

#include "pp3d/comm/local_communicator.h"
#include "pp3d/comm/tcp_communicator.h"
#include "pp3d/parallel/process_grid.h"

using namespace pp3d;
using Groups = std::vector<std::vector<int>>;

TEST_CASE("process grid: DESIGN.md world 16, tp 2, pp 4", "[parallel][grid]") {
  const Groups tp = ProcessGrid::group_ranks(16, 2, 4, GroupKind::TP);
  REQUIRE(tp == Groups{{0, 1}, {2, 3}, {4, 5}, {6, 7}, {8, 9}, {10, 11}, {12, 13}, {14, 15}});
  const Groups dp = ProcessGrid::group_ranks(16, 2, 4, GroupKind::DP);
  REQUIRE(dp == Groups{{0, 2}, {1, 3}, {4, 6}, {5, 7}, {8, 10}, {9, 11}, {12, 14}, {13, 15}});
  const Groups pp = ProcessGrid::group_ranks(16, 2, 4, GroupKind::PP);
  REQUIRE(pp == Groups{{0, 4, 8, 12}, {1, 5, 9, 13}, {2, 6, 10, 14}, {3, 7, 11, 15}});
  const Groups mp = ProcessGrid::group_ranks(16, 2, 4, GroupKind::MP);
  REQUIRE(mp == Groups{{0, 1, 4, 5, 8, 9, 12, 13}, {2, 3, 6, 7, 10, 11, 14, 15}});
  const Groups emb = ProcessGrid::group_ranks(16, 2, 4, GroupKind::Embedding);
  REQUIRE(emb == Groups{{0, 12}, {1, 13}, {2, 14}, {3, 15}});
}

TEST_CASE("process grid: every kind partitions the ranks consistently with the rank formula", "[parallel][grid]") {
  for (auto [world, tp, pp] : std::vector<std::tuple<int, int, int>>{{1, 1, 1}, {8, 2, 2}, {12, 3, 2}, {6, 1, 3},
                                                                     {8, 8, 1}, {8, 1, 8}}) {
    const int dp = ProcessGrid::derive_dp(world, tp, pp);
    for (GroupKind k : {GroupKind::TP, GroupKind::DP, GroupKind::PP, GroupKind::MP}) {
      const auto groups = ProcessGrid::group_ranks(world, tp, pp, k);
      std::multiset<int> seen;
      for (const auto& g : groups) seen.insert(g.begin(), g.end());
      REQUIRE(seen.size() == static_cast<std::size_t>(world));
      REQUIRE(std::set<int>(seen.begin(), seen.end()).size() == static_cast<std::size_t>(world));
      const int expect = k == GroupKind::TP ? tp : k == GroupKind::DP ? dp : k == GroupKind::PP ? pp : tp * pp;
      for (const auto& g : groups) {
        REQUIRE(static_cast<int>(g.size()) == expect);
        // Members differ only in the coordinate(s) of their kind.
        for (int r : g) {
          const int t = r % tp, d = (r / tp) % dp, p = r / (tp * dp);
          const int t0 = g[0] % tp, d0 = (g[0] / tp) % dp, p0 = g[0] / (tp * dp);
          if (k != GroupKind::TP && k != GroupKind::MP) REQUIRE(t == t0);
          if (k != GroupKind::DP) REQUIRE(d == d0);
          if (k != GroupKind::PP && k != GroupKind::MP) REQUIRE(p == p0);
          REQUIRE(ProcessGrid::rank_of(t, d, p, tp, dp) == r);
        }
      }
    }
  }
  // pp == 1: the embedding group is the rank itself.
  REQUIRE(ProcessGrid::group_ranks(4, 2, 1, GroupKind::Embedding) == Groups{{0}, {1}, {2}, {3}});
}

TEST_CASE("process grid: layouts that do not divide are rejected with the numbers", "[parallel][grid]") {
  try {
    ProcessGrid::group_ranks(6, 2, 2, GroupKind::TP);
    FAIL("expected an error");
  } catch (const Error& e) {
    const std::string m = e.what();
    REQUIRE(m.find("world 6 is not divisible by tp*pp = 4 (tp=2, pp=2)") != std::string::npos);
    REQUIRE(m.find("choose tp*pp dividing") != std::string::npos);
  }
  REQUIRE_THROWS_AS(ProcessGrid::derive_dp(8, 0, 1), Error);
  REQUIRE_THROWS_AS(ProcessGrid::derive_dp(8, 1, -2), Error);
  REQUIRE_THROWS_AS(ProcessGrid(std::make_shared<LocalCommunicator>(), 2, 1), Error);
}

TEST_CASE("process grid: one rank has trivial groups", "[parallel][grid]") {
  ProcessGrid g(std::make_shared<LocalCommunicator>(), 1, 1);
  REQUIRE(g.dp() == 1);
  for (const auto* c : {&g.tp_group(), &g.dp_group(), &g.pp_group(), &g.mp_group(), &g.embedding_group()}) {
    REQUIRE(*c != nullptr);
    REQUIRE((*c)->size() == 1);
  }
}

TEST_CASE("process grid: groups made by split match group_ranks (8 ranks over TCP, tp 2 pp 2)",
          "[parallel][grid][tcp]") {
  constexpr int kWorld = 8;
  auto store0 = std::make_shared<TcpStore>("127.0.0.1", 0, 0, kWorld, 20.0);
  std::vector<std::string> errors(kWorld);
  auto body = [&](int r) {
    try {
      auto store = r == 0 ? store0 : std::make_shared<TcpStore>("127.0.0.1", store0->port(), r, kWorld, 20.0);
      ProcessGrid grid(std::make_shared<TcpCommunicator>(store), 2, 2);
      const std::pair<GroupKind, const std::shared_ptr<Communicator>*> kinds[] = {
          {GroupKind::TP, &grid.tp_group()}, {GroupKind::DP, &grid.dp_group()}, {GroupKind::PP, &grid.pp_group()},
          {GroupKind::MP, &grid.mp_group()}, {GroupKind::Embedding, &grid.embedding_group()}};
      for (const auto& [kind, group] : kinds) {
        // Expected group: the one containing r (pp=2: every rank is first or last stage).
        std::vector<int> expect;
        for (const auto& g : ProcessGrid::group_ranks(kWorld, 2, 2, kind))
          if (std::find(g.begin(), g.end(), r) != g.end()) expect = g;
        const auto& c = *group;
        if (!c || c->size() != static_cast<int>(expect.size())) throw std::runtime_error("bad group size");
        // All-gather the world ranks of the members: must equal the expected list in order.
        Tensor mine = Tensor::from_vector_i32({1}, {r});
        Tensor all = Tensor::zeros({c->size()}, DType::I32);
        c->all_gather(mine, all);
        for (int i = 0; i < c->size(); ++i) {
          if (all.data<int32_t>()[i] != expect[static_cast<std::size_t>(i)] || c->global_rank(i) != expect[static_cast<std::size_t>(i)])
            throw std::runtime_error(fmt::format("rank {} group {} member {} wrong", r, c->name(), i));
        }
      }
      store->barrier();
    } catch (const std::exception& e) {
      errors[static_cast<std::size_t>(r)] = e.what();
    }
  };
  std::vector<std::thread> threads;
  for (int r = 0; r < kWorld; ++r) threads.emplace_back(body, r);
  for (auto& t : threads) t.join();
  for (int r = 0; r < kWorld; ++r) { INFO("rank " << r << ": " << errors[static_cast<std::size_t>(r)]); CHECK(errors[static_cast<std::size_t>(r)].empty()); }
}
