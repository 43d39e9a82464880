// TcpStore: one thread per rank inside one process; the server on an
// ephemeral port. Covers the key-value operations, barrier, and every error a
// user can hit (timeouts naming keys/ranks, port in use, unreachable master,
// mismatched WORLD_SIZE, duplicate RANK).
#include <catch2/catch.hpp>

#include <algorithm>
#include <chrono>
#include <thread>

#include "pp3d/comm/tcp_store.h"
#include "pp3d/core/error.h"

using namespace pp3d;

namespace {
template <typename F>
void run_ranks(int n, F&& f) {
  std::vector<std::thread> th;
  std::vector<std::string> err(static_cast<std::size_t>(n));
  for (int r = 0; r < n; ++r)
    th.emplace_back([&, r] {
      try {
        f(r);
      } catch (const std::exception& e) {
        err[static_cast<std::size_t>(r)] = e.what();
      }
    });
  for (auto& t : th) t.join();
  for (int r = 0; r < n; ++r) { INFO("rank " << r); CHECK(err[static_cast<std::size_t>(r)] == ""); }
}
}  // namespace

TEST_CASE("tcp store: set/get/wait/add/check/erase across ranks", "[comm][tcp]") {
  constexpr int kN = 4;
  auto s0 = std::make_shared<TcpStore>("127.0.0.1", 0, 0, kN, 10.0);
  REQUIRE(s0->port() > 0);
  std::vector<int64_t> added(kN);
  run_ranks(kN, [&](int r) {
    auto s = r == 0 ? s0 : std::make_shared<TcpStore>("127.0.0.1", s0->port(), r, kN, 10.0);
    // Binary values (like an NCCL unique id, 128 bytes with zeros).
    TcpStore::Bytes id(128);
    for (std::size_t i = 0; i < id.size(); ++i) id[i] = static_cast<uint8_t>((i * 37 + static_cast<std::size_t>(r)) % 256);
    s->set("id/" + std::to_string(r), id);
    for (int q = 0; q < kN; ++q) {
      const auto got = s->get("id/" + std::to_string(q));
      TcpStore::Bytes expect(128);
      for (std::size_t i = 0; i < expect.size(); ++i) expect[i] = static_cast<uint8_t>((i * 37 + static_cast<std::size_t>(q)) % 256);
      if (got != expect) throw std::runtime_error("bytes differ");
    }
    added[static_cast<std::size_t>(r)] = s->add("counter", r + 1);
    s->barrier();
    if (s->add("counter", 0) != 1 + 2 + 3 + 4) throw std::runtime_error("add total wrong");
    if (!s->check({"id/0", "id/3"}) || s->check({"nope"})) throw std::runtime_error("check wrong");
    s->wait({"id/0", "id/1", "id/2", "id/3"});
    s->barrier();
    if (r == 0) s->erase("counter");
    s->barrier();
    if (s->check({"counter"})) throw std::runtime_error("erase did not erase");
    s->barrier();
  });
  // add is atomic: each rank saw a distinct running total, the last one saw 1+2+3+4.
  std::sort(added.begin(), added.end());
  REQUIRE(std::adjacent_find(added.begin(), added.end()) == added.end());
  REQUIRE(added.back() == 10);
  for (int r = 0; r < kN; ++r) REQUIRE(added[static_cast<std::size_t>(r)] >= r + 1);
}

TEST_CASE("tcp store: get blocks until another rank sets, readers limit deletes", "[comm][tcp]") {
  TcpStore s0("127.0.0.1", 0, 0, 2, 10.0);
  std::thread t([&] {
    TcpStore s1("127.0.0.1", s0.port(), 1, 2, 10.0);
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    s1.set("late", std::string("hello"), 1);
    s1.barrier();
  });
  REQUIRE(s0.get_string("late") == "hello");  // waited ~100 ms
  REQUIRE_FALSE(s0.check({"late"}));          // deleted after its one reader
  s0.barrier();
  t.join();
}

TEST_CASE("tcp store: timeouts name the missing keys and ranks", "[comm][tcp]") {
  TcpStore s0("127.0.0.1", 0, 0, 3, 0.4);
  REQUIRE_THROWS_WITH(s0.get("never", 0.2), Catch::Contains("never") && Catch::Contains("timed out"));
  REQUIRE_THROWS_WITH(s0.wait({"a", "b"}, 0.2), Catch::Contains("a b"));
  REQUIRE(s0.wait_missing({"x"}, 0.05) == std::vector<std::string>{"x"});
  // Rank 1 arrives, rank 2 never does.
  std::thread t([&] {
    try {
      TcpStore s1("127.0.0.1", s0.port(), 1, 3, 0.4);
      s1.barrier();
    } catch (const Error&) {
    }
  });
  REQUIRE_THROWS_WITH(s0.barrier(), Catch::Contains("rank(s) [2] of 3 never arrived"));
  t.join();
}

TEST_CASE("tcp store: port in use, unreachable master, mismatched WORLD_SIZE, duplicate RANK", "[comm][tcp]") {
  TcpStore s0("127.0.0.1", 0, 0, 3, 2.0);
  REQUIRE_THROWS_WITH(TcpStore("127.0.0.1", s0.port(), 0, 3, 1.0), Catch::Contains("already in use"));
  REQUIRE_THROWS_WITH(TcpStore("127.0.0.1", s0.port(), 1, 4, 1.0),
                      Catch::Contains("WORLD_SIZE=4") && Catch::Contains("WORLD_SIZE=3"));
  TcpStore s1("127.0.0.1", s0.port(), 1, 3, 1.0);
  REQUIRE_THROWS_WITH(TcpStore("127.0.0.1", s0.port(), 1, 3, 1.0), Catch::Contains("joined the store twice"));
  // A port nobody listens on: find one by opening and closing a server.
  int free_port = 0;
  { TcpStore tmp("127.0.0.1", 0, 0, 1, 1.0); free_port = tmp.port(); }
  const auto t0 = std::chrono::steady_clock::now();
  REQUIRE_THROWS_WITH(TcpStore("127.0.0.1", free_port, 1, 2, 0.5),
                      Catch::Contains("could not reach the TCP store") && Catch::Contains("MASTER_ADDR"));
  REQUIRE(std::chrono::steady_clock::now() - t0 < std::chrono::seconds(3));
  REQUIRE_THROWS_WITH(TcpStore("127.0.0.1", 1234, 5, 3, 0.5), Catch::Contains("out of range"));
}
