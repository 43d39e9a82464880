// Pipeline splits and schedules: layer coverage, error messages, compute-order
// invariants, and a simulation of every rank's plan under blocking batched
// send/recv semantics (no deadlock, every transfer matched with the right
// tensor, every input received before its use); the one-rank PipelineStage
// against the model's own micro-batch loop. Multi-rank runs: tests/parallel.
#include <catch2/catch.hpp>

#include <map>
#include <set>
#include <tuple>

#include "pp3d/backend/backend.h"
#include "pp3d/comm/local_communicator.h"
#include "pp3d/core/allocator.h"
#include "pp3d/core/rng.h"
#include "pp3d/model/gpt_pipeline.h"
#include "pp3d/parallel/pipeline_schedule.h"

using namespace pp3d;

namespace {

void check_covers(const PipelineSplit& s, int64_t L) {
  int64_t next = 0;
  for (int i = 0; i < s.num_stages(); ++i) {
    CHECK(s.first_layer(i) == next);
    next = s.end_layer(i);
  }
  CHECK(next == L);
}

// Simulates blocking batch_send_recv: a batch completes once every peer holding
// the matching op has reached (posted) the batch containing it.
void simulate_plans(ScheduleKind kind, int pp, int v, int m) {
  INFO(schedule_name(kind) << " pp=" << pp << " v=" << v << " m=" << m);
  const int S = pp * v;
  std::vector<std::vector<PipeInstr>> plans;
  for (int r = 0; r < pp; ++r) plans.push_back(make_pipeline_plan(kind, pp, r, v, m));
  // Where each message is posted: (kind, sending stage, mb, is_send) -> (rank, instr index).
  using Msg = std::tuple<int, int, int, bool>;
  std::map<Msg, std::pair<int, std::size_t>> where;
  std::map<Msg, std::pair<int, int>> peer_tag;
  for (int r = 0; r < pp; ++r)
    for (std::size_t i = 0; i < plans[r].size(); ++i)
      for (const auto& t : plans[r][i].transfers) {
        const int s = t.chunk * pp + r;
        const int sender_stage = t.send ? s : (t.kind == PipeTransfer::Activation ? s - 1 : s + 1);
        REQUIRE(sender_stage >= 0);
        REQUIRE(sender_stage < S);
        const Msg key{t.kind, sender_stage, t.mb, t.send};
        REQUIRE(where.count(key) == 0);  // each message posted once
        where[key] = {r, i};
        peer_tag[key] = {t.peer, t.tag};
      }
  int n_msgs = 0;
  for (const auto& [key, loc] : where) {
    const auto [k, st, mb, send] = key;
    const Msg other{k, st, mb, !send};
    REQUIRE(where.count(other) == 1);  // matched by exactly one partner
    CHECK(peer_tag[key].first == where[other].first);
    CHECK(peer_tag[key].second == peer_tag[other].second);
    n_msgs += send ? 1 : 0;
  }
  CHECK(n_msgs == 2 * (S - 1) * m);  // activations and gradients across every stage boundary

  std::vector<std::size_t> ptr(static_cast<std::size_t>(pp), 0);
  std::vector<std::set<std::tuple<int, int, int>>> have(static_cast<std::size_t>(pp));  // (kind, chunk, mb)
  std::vector<std::set<std::pair<int, int>>> fwd_done(static_cast<std::size_t>(pp));
  std::vector<std::set<std::pair<int, int>>> input_done(static_cast<std::size_t>(pp));  // weight part pending
  bool progress = true;
  while (progress) {
    progress = false;
    for (int r = 0; r < pp; ++r) {
      auto& p = ptr[static_cast<std::size_t>(r)];
      while (p < plans[r].size()) {
        const PipeInstr& in = plans[r][p];
        if (in.is_compute) {
          const PipeAction& a = in.action;
          const int s = a.chunk * pp + r;
          if (a.kind == PipeAction::Forward) {
            if (s > 0) REQUIRE(have[r].erase({PipeTransfer::Activation, a.chunk, a.mb}) == 1);
            fwd_done[r].insert({a.chunk, a.mb});
          } else if (a.kind == PipeAction::BackwardWeight) {
            REQUIRE(input_done[r].erase({a.chunk, a.mb}) == 1);  // after its input part, once
          } else {
            REQUIRE(fwd_done[r].count({a.chunk, a.mb}) == 1);
            if (s < S - 1) REQUIRE(have[r].erase({PipeTransfer::Gradient, a.chunk, a.mb}) == 1);
            if (a.kind == PipeAction::BackwardInput) input_done[r].insert({a.chunk, a.mb});
          }
        } else {
          bool all = true;
          for (const auto& t : in.transfers) {
            const int s = t.chunk * pp + r;
            const int sender_stage = t.send ? s : (t.kind == PipeTransfer::Activation ? s - 1 : s + 1);
            const auto [pr, pi] = where[Msg{t.kind, sender_stage, t.mb, !t.send}];
            if (ptr[static_cast<std::size_t>(pr)] < pi) all = false;
          }
          if (!all) break;
          for (const auto& t : in.transfers)
            if (!t.send) have[r].insert({t.kind, t.chunk, t.mb});
        }
        ++p;
        progress = true;
      }
    }
  }
  for (int r = 0; r < pp; ++r) {
    INFO("rank " << r << " stuck at instruction " << ptr[r] << " of " << plans[r].size());
    CHECK(ptr[static_cast<std::size_t>(r)] == plans[r].size());
    CHECK(fwd_done[r].size() == static_cast<std::size_t>(v * m));
    CHECK(input_done[r].empty());  // every weight part ran
  }
}

}  // namespace

TEST_CASE("pipeline split: balanced and explicit splits cover every layer once", "[parallel][pipeline]") {
  const auto b = PipelineSplit::balanced(10, 4);
  CHECK(b.layers_per_stage == std::vector<int64_t>{3, 3, 2, 2});
  check_covers(b, 10);
  const auto bi = PipelineSplit::balanced(8, 2, 2);
  CHECK(bi.layers_per_stage == std::vector<int64_t>{2, 2, 2, 2});
  CHECK(bi.stage_of(1, 1) == 3);
  const auto e = PipelineSplit::parse("5, 7,6,6", 24, 4);
  CHECK(e.layers_per_stage == std::vector<int64_t>{5, 7, 6, 6});
  CHECK(e.str() == "[0,5) [5,12) [12,18) [18,24)");
  check_covers(e, 24);
  check_covers(PipelineSplit::parse("0,3,3,2", 8, 4), 8);  // embedding-only first stage
  check_covers(PipelineSplit::parse("", 9, 3), 9);
}

TEST_CASE("pipeline split: wrong splits are rejected with the reason", "[parallel][pipeline]") {
  CHECK_THROWS_WITH(PipelineSplit::parse("5,7,6", 24, 4), Catch::Contains("has 3 entries") &&
                                                              Catch::Contains("pp*v = 4"));
  CHECK_THROWS_WITH(PipelineSplit::parse("5,7,6,5", 24, 4), Catch::Contains("sums to 23 layers but the model has 24"));
  CHECK_THROWS_WITH(PipelineSplit::parse("6,0,6,6", 18, 4), Catch::Contains("middle virtual stage 1 has 0 layers"));
  CHECK_THROWS_WITH(PipelineSplit::parse("6,x,6,6", 24, 4), Catch::Contains("entry 1 ('x') is not an integer"));
  CHECK_THROWS_WITH(PipelineSplit::parse("6,-1,6,6", 24, 4), Catch::Contains("negative"));
  CHECK_THROWS_WITH(PipelineSplit::balanced(3, 4), Catch::Contains("3 layers cannot fill pp*v = 4"));
  CHECK_THROWS_WITH(parse_schedule("zigzag"), Catch::Contains("unknown pipeline schedule 'zigzag'"));
  CHECK(parse_schedule("1f1b") == ScheduleKind::OneFOneB);
  CHECK(parse_schedule("interleaved") == ScheduleKind::Interleaved);
  CHECK(parse_schedule("zb-h1") == ScheduleKind::ZeroBubbleH1);
  CHECK(std::string(schedule_name(ScheduleKind::ZeroBubbleH1)) == "zb-h1");
  CHECK_THROWS_WITH(check_schedule_args(ScheduleKind::ZeroBubbleH1, 4, 2, 4), Catch::Contains("use 'interleaved'"));
  CHECK_THROWS_WITH(check_schedule_args(ScheduleKind::Interleaved, 4, 2, 6),
                    Catch::Contains("multiple of pp (4)"));
  CHECK_THROWS_WITH(check_schedule_args(ScheduleKind::OneFOneB, 4, 2, 4), Catch::Contains("use 'interleaved'"));
  CHECK_THROWS_WITH(check_schedule_args(ScheduleKind::Interleaved, 4, 1, 4), Catch::Contains("v >= 2"));
}

TEST_CASE("pipeline schedule: compute orders run every op once with the expected warm-up", "[parallel][pipeline]") {
  const int pp = 4, m = 8;
  for (int r = 0; r < pp; ++r) {
    const auto g = compute_order(ScheduleKind::GPipe, pp, r, 1, m);
    const auto f = compute_order(ScheduleKind::OneFOneB, pp, r, 1, m);
    REQUIRE(g.size() == 2u * m);
    REQUIRE(f.size() == 2u * m);
    int warm = 0;
    while (f[static_cast<std::size_t>(warm)].kind == PipeAction::Forward) ++warm;
    CHECK(warm == pp - r);  // pp - r - 1 warm-up forwards, then the first steady forward
    CHECK(max_in_flight(g) == m);
    CHECK(max_in_flight(f) == pp - r);
    const auto il = compute_order(ScheduleKind::Interleaved, pp, r, 2, m);
    REQUIRE(il.size() == 4u * m);
    std::set<std::tuple<int, int, int>> seen;
    for (const auto& a : il) CHECK(seen.insert({a.kind, a.chunk, a.mb}).second);
    // Megatron's warm-up: (pp - r - 1) * 2 + (v - 1) * pp forwards before the first backward.
    int iw = 0;
    while (il[static_cast<std::size_t>(iw)].kind == PipeAction::Forward) ++iw;
    CHECK(iw == (pp - r - 1) * 2 + pp + 1);
  }
  CHECK(theoretical_bubble(ScheduleKind::OneFOneB, 4, 1, 8) == Approx(3.0 / 8));
  // The compute orders reach the theoretical bubble on an ideal pipeline.
  for (int p : {2, 3, 4})
    for (int mm : {p, 2 * p, 4 * p}) {
      INFO("pp " << p << " m " << mm);
      CHECK(simulated_bubble(ScheduleKind::GPipe, p, 1, mm) == Approx(theoretical_bubble(ScheduleKind::GPipe, p, 1, mm)));
      CHECK(simulated_bubble(ScheduleKind::OneFOneB, p, 1, mm) ==
            Approx(theoretical_bubble(ScheduleKind::OneFOneB, p, 1, mm)));
      CHECK(simulated_bubble(ScheduleKind::Interleaved, p, 2, mm) ==
            Approx(theoretical_bubble(ScheduleKind::Interleaved, p, 2, mm)));
      CHECK(simulated_bubble(ScheduleKind::ZeroBubbleH1, p, 1, mm) ==
            Approx(theoretical_bubble(ScheduleKind::ZeroBubbleH1, p, 1, mm)));
    }
  CHECK(theoretical_bubble(ScheduleKind::Interleaved, 4, 2, 8) == Approx(3.0 / 16));
}

// 1F1B's order with the backward split and each W right after its B (no deferral).
std::vector<std::vector<PipeAction>> split_1f1b_orders(int pp, int m) {
  std::vector<std::vector<PipeAction>> orders;
  for (int r = 0; r < pp; ++r) {
    std::vector<PipeAction> o;
    for (const PipeAction& a : compute_order(ScheduleKind::OneFOneB, pp, r, 1, m)) {
      if (a.kind != PipeAction::Backward) {
        o.push_back(a);
        continue;
      }
      o.push_back({PipeAction::BackwardInput, a.chunk, a.mb});
      o.push_back({PipeAction::BackwardWeight, a.chunk, a.mb});
    }
    orders.push_back(std::move(o));
  }
  return orders;
}

TEST_CASE("pipeline schedule: zb-h1 cuts 1F1B's bubble to a third at 1F1B's activation memory",
          "[parallel][pipeline]") {
  for (int pp = 1; pp <= 6; ++pp)
    for (int m = 1; m <= 3 * pp + 1; ++m) {
      INFO("pp " << pp << " m " << m);
      const double zb = simulated_bubble(ScheduleKind::ZeroBubbleH1, pp, 1, m);
      CHECK(zb == Approx(theoretical_bubble(ScheduleKind::ZeroBubbleH1, pp, 1, m)));
      if (m >= pp) CHECK(zb == Approx(static_cast<double>(pp - 1) / (3.0 * m)));
      CHECK(zb <= simulated_bubble(ScheduleKind::OneFOneB, pp, 1, m) + 1e-12);
      for (int r = 0; r < pp; ++r) {
        const auto zo = compute_order(ScheduleKind::ZeroBubbleH1, pp, r, 1, m);
        const auto fo = compute_order(ScheduleKind::OneFOneB, pp, r, 1, m);
        REQUIRE(zo.size() == 3u * m);
        // Full activation sets as 1F1B; W inputs of at most `r` more micro-batches.
        CHECK(max_in_flight_before_input_grad(zo) == max_in_flight(fo));
        CHECK(max_in_flight(zo) <= std::min(pp, m));
        CHECK(max_in_flight(zo) - max_in_flight(fo) <= r);
      }
    }
  // Deferring the W's is what removes the bubble: the same split backward with
  // each W right after its B only reaches 2(pp - 1) / (3m).
  for (int pp : {2, 4})
    for (int m : {4, 8, 16}) {
      INFO("pp " << pp << " m " << m);
      CHECK(simulated_bubble(split_1f1b_orders(pp, m), pp, 1, m) == Approx(2.0 * (pp - 1) / (3.0 * m)));
    }
  CHECK(theoretical_bubble(ScheduleKind::ZeroBubbleH1, 4, 1, 8) == Approx(1.0 / 8));
}

TEST_CASE("pipeline schedule: broken compute orders are rejected by the simulation", "[parallel][pipeline]") {
  auto orders = split_1f1b_orders(2, 2);
  CHECK_NOTHROW(simulated_bubble(orders, 2, 1, 2));
  auto w_first = orders;
  std::swap(w_first[1][1], w_first[1][2]);  // rank 1: W0 before B0
  CHECK_THROWS_WITH(simulated_bubble(w_first, 2, 1, 2), Catch::Contains("without a pending input part"));
  auto no_w = orders;
  no_w[0].pop_back();  // rank 0 never runs its last W
  CHECK_THROWS_WITH(simulated_bubble(no_w, 2, 1, 2), Catch::Contains("never ran"));
  // Rank 0 waits for B0 before sending F1; rank 1 insists on F1 first.
  auto op = [](PipeAction::Kind k, int mb) { return PipeAction{k, 0, mb}; };
  using K = PipeAction;
  const std::vector<std::vector<PipeAction>> cross = {
      {op(K::Forward, 0), op(K::BackwardInput, 0), op(K::BackwardWeight, 0), op(K::Forward, 1),
       op(K::BackwardInput, 1), op(K::BackwardWeight, 1)},
      {op(K::Forward, 1), op(K::BackwardInput, 1), op(K::BackwardWeight, 1), op(K::Forward, 0),
       op(K::BackwardInput, 0), op(K::BackwardWeight, 0)}};
  CHECK_THROWS_WITH(simulated_bubble(cross, 2, 1, 2), Catch::Contains("deadlock"));
}

TEST_CASE("pipeline schedule: every plan completes under blocking batched p2p", "[parallel][pipeline]") {
  for (int pp = 1; pp <= 5; ++pp)
    for (int m : {1, 2, 3, pp, 2 * pp, 3 * pp + 1}) {
      simulate_plans(ScheduleKind::GPipe, pp, 1, m);
      simulate_plans(ScheduleKind::OneFOneB, pp, 1, m);
      simulate_plans(ScheduleKind::ZeroBubbleH1, pp, 1, m);
    }
  for (int pp = 2; pp <= 5; ++pp)
    for (int v = 2; v <= 3; ++v)
      for (int m : {pp, 2 * pp, 3 * pp}) simulate_plans(ScheduleKind::Interleaved, pp, v, m);
}

TEST_CASE("pipeline stage: one rank equals the model's micro-batch loop bitwise", "[parallel][pipeline]") {
  auto be = make_cpu_backend();
  GptConfig cfg;
  cfg.vocab_size = 29;
  cfg.max_seq_len = 5;
  cfg.num_layers = 2;
  cfg.num_heads = 2;
  cfg.hidden_size = 8;
  const int64_t B = 2, T = 5;
  const int m = 3;
  auto ids = [&](uint64_t seed) {
    std::vector<int32_t> v(static_cast<std::size_t>(B * T));
    for (std::size_t i = 0; i < v.size(); ++i)
      v[i] = static_cast<int32_t>(rng_uniform(rng_key(seed, "ids"), i) * 29.0f) % 29;
    return Tensor::from_vector_i32({B, T}, v);
  };
  std::vector<MicroBatch> mbs;
  for (int i = 0; i < m; ++i) mbs.push_back({ids(2 * i), ids(2 * i + 1)});
  const float w = 1.0f / static_cast<float>(m * B * T);
  Gpt ref(cfg, *be);
  double ref_loss = 0;
  for (const auto& mb : mbs) {
    ActivationCache c;
    ref.forward(mb.ids, mb.targets, w, c);
    ref_loss += c.loss();
    ref.backward(Tensor(), c);
  }
  for (ScheduleKind k : {ScheduleKind::GPipe, ScheduleKind::OneFOneB, ScheduleKind::ZeroBubbleH1}) {
    PipelineConfig pc;
    pc.schedule = k;
    pc.micro_batch_size = B;
    pc.seq_len = T;
    GptPipelineStage st(cfg, *be, std::make_shared<LocalCommunicator>("pp"), nullptr, pc);
    auto& alloc = Allocator::instance();
    const std::size_t base = alloc.stats(MemCategory::Activations).current;
    const StepResult r = st.run_step(mbs, w);
    CHECK(alloc.stats(MemCategory::Activations).current == base);
    CHECK(r.loss == ref_loss);
    CHECK(r.theoretical_bubble == 0.0);
    CHECK(r.events.size() == (splits_backward(k) ? 3u : 2u) * m);
    for (Parameter* p : st.parameters()) {
      INFO(schedule_name(k) << " " << p->name);
      CHECK(p->grad.to_vector() == ref.find_parameter(p->name)->grad.to_vector());
    }
    std::vector<MicroBatch> no_ids = mbs;
    no_ids[1].ids = Tensor();
    CHECK_THROWS_WITH(st.run_step(no_ids, w), Catch::Contains("micro-batch 1 has no ids"));
  }
  PipelineConfig il;
  il.schedule = ScheduleKind::Interleaved;
  il.virtual_stages = 2;
  CHECK_THROWS_WITH(GptPipelineStage(cfg, *be, std::make_shared<LocalCommunicator>("pp"), nullptr, il),
                    Catch::Contains("needs pp >= 2"));
  PipelineConfig v2;
  v2.virtual_stages = 2;
  CHECK_THROWS_WITH(GptPipelineStage(cfg, *be, std::make_shared<LocalCommunicator>("pp"), nullptr, v2),
                    Catch::Contains("needs schedule 'interleaved'"));
}
