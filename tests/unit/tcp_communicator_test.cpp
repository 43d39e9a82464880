// TcpCommunicator: the shared conformance checks (tests/dist/comm_checks.h) with
// one thread per rank in this process, plus a deadline naming the missing rank.
#include <catch2/catch.hpp>

#include <thread>

#include "dist/comm_checks.h"
#include "pp3d/comm/tcp_communicator.h"

using namespace pp3d;

namespace {
// Runs body(comm) on n in-process ranks; returns per-rank error strings.
template <typename F>
std::vector<std::string> on_ranks(int n, double store_timeout, F&& body, bool final_barrier = true) {
  auto s0 = std::make_shared<TcpStore>("127.0.0.1", 0, 0, n, store_timeout);
  std::vector<std::string> err(static_cast<std::size_t>(n));
  std::vector<std::thread> th;
  for (int r = 0; r < n; ++r)
    th.emplace_back([&, r] {
      try {
        auto s = r == 0 ? s0 : std::make_shared<TcpStore>("127.0.0.1", s0->port(), r, n, store_timeout);
        TcpCommunicator c(s);
        err[static_cast<std::size_t>(r)] = body(c);
        if (final_barrier) s->barrier();
      } catch (const std::exception& e) {
        err[static_cast<std::size_t>(r)] = e.what();
      }
    });
  for (auto& t : th) t.join();
  return err;
}
}  // namespace

TEST_CASE("tcp communicator: collectives, p2p and split against the serial computation", "[comm][tcp]") {
  for (int n : {3, 4}) {
    const auto err = on_ranks(n, 20.0, [](Communicator& c) {
      const std::vector<int64_t> sizes{1, 7, 1001};
      std::string e = test::check_all_reduce(c, sizes, 11);
      if (e.empty()) e = test::check_reduce_scatter(c, {1, 5, 33}, 12);
      if (e.empty()) e = test::check_all_gather_broadcast(c, sizes, 13);
      if (e.empty()) e = test::check_p2p(c, sizes, 14);
      if (e.empty()) e = test::check_split(c);
      if (e.empty()) c.barrier();
      return e;
    });
    for (int r = 0; r < n; ++r) { INFO("n=" << n << " rank " << r); CHECK(err[static_cast<std::size_t>(r)] == ""); }
  }
}

TEST_CASE("tcp communicator: all_reduce result is bitwise the rank-order sum", "[comm][tcp]") {
  const auto err = on_ranks(3, 20.0, [](Communicator& c) {
    Tensor t = test::make_tensor(test::rank_values(c.rank(), 257, DType::F32, 5), DType::F32);
    c.all_reduce(t);
    std::vector<float> want = test::rank_values(0, 257, DType::F32, 5);
    for (int r = 1; r < 3; ++r) {
      const auto v = test::rank_values(r, 257, DType::F32, 5);
      for (std::size_t i = 0; i < want.size(); ++i) want[i] += v[i];
    }
    return t.to_vector() == want ? std::string() : std::string("not the rank-order f32 sum");
  });
  for (const auto& e : err) CHECK(e == "");
}

TEST_CASE("tcp communicator: a rank that does not arrive is named after the deadline", "[comm][tcp]") {
  setenv("PP3D_COMM_TIMEOUT", "0.5", 1);
  const auto err = on_ranks(3, 5.0, [](Communicator& c) -> std::string {
    if (c.rank() == 2) return "";  // never joins the all-reduce
    Tensor t = Tensor::zeros({4});
    c.all_reduce(t);
    return "all_reduce returned without rank 2";
  }, /*final_barrier=*/false);
  unsetenv("PP3D_COMM_TIMEOUT");
  for (int r = 0; r < 2; ++r) {
    INFO(err[static_cast<std::size_t>(r)]);
    CHECK(err[static_cast<std::size_t>(r)].find("all_reduce on group 'world'") != std::string::npos);
    CHECK(err[static_cast<std::size_t>(r)].find("global rank(s) [2] did not arrive") != std::string::npos);
  }
}
