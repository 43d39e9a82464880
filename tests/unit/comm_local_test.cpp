// LocalCommunicator: identity collectives, the same argument checks as the
// multi-rank communicators, and point-to-point refused.
#include <catch2/catch.hpp>

#include "pp3d/comm/local_communicator.h"

using namespace pp3d;

TEST_CASE("local communicator: collectives are the identity", "[comm][local]") {
  LocalCommunicator c("world", 3);
  REQUIRE(c.size() == 1);
  REQUIRE(c.rank() == 0);
  REQUIRE(c.global_rank(0) == 3);
  Tensor t = Tensor::from_vector({3}, {1.f, -2.f, 3.5f});
  for (ReduceOp op : {ReduceOp::Sum, ReduceOp::Avg, ReduceOp::Max}) {
    c.all_reduce(t, op);
    REQUIRE(t.to_vector() == std::vector<float>{1.f, -2.f, 3.5f});
    c.all_reduce_async(t, op)->wait();
    REQUIRE(t.to_vector() == std::vector<float>{1.f, -2.f, 3.5f});
  }
  Tensor out = Tensor::zeros({3});
  c.reduce_scatter(t, out);
  REQUIRE(out.to_vector() == t.to_vector());
  Tensor g = Tensor::zeros({1, 3});
  auto h = c.all_gather_async(t, g);
  REQUIRE(h->test());
  REQUIRE(g.to_vector() == t.to_vector());
  c.broadcast(t, 0);
  c.barrier();
  REQUIRE_THROWS_AS(c.broadcast(t, 1), Error);
  Tensor small = Tensor::zeros({2});
  REQUIRE_THROWS_AS(c.reduce_scatter(t, small), Error);
  Tensor wrong = Tensor::zeros({3}, DType::BF16);
  REQUIRE_THROWS_AS(c.all_gather(t, wrong), Error);
}

TEST_CASE("local communicator: point-to-point is an error, split", "[comm][local]") {
  LocalCommunicator c;
  Tensor t = Tensor::zeros({2});
  REQUIRE_THROWS_WITH(c.send(t, 0), Catch::Contains("no other rank"));
  REQUIRE_THROWS_AS(c.recv(t, 0), Error);
  std::vector<P2POp> none;
  c.batch_send_recv(none);
  std::vector<P2POp> one{{P2POp::Send, t, 0}};
  REQUIRE_THROWS_AS(c.batch_send_recv(one), Error);
  auto s = c.split(0, 0, "tp[0]");
  REQUIRE(s->name() == "tp[0]");
  REQUIRE(s->size() == 1);
  REQUIRE(c.split(-1, 0, "none") == nullptr);
}
