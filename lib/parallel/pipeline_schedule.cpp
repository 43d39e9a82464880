// Pipeline schedules: compute orders (GPipe, 1F1B, interleaved 1F1B, ZB-H1) and the
// timeline-based placement of the communication batches between them.
#include "pp3d/parallel/pipeline_schedule.h"

#include <algorithm>
#include <limits>

#include "pp3d/core/error.h"

namespace pp3d {

ScheduleKind parse_schedule(std::string_view name) {
  if (name == "gpipe") return ScheduleKind::GPipe;
  if (name == "1f1b") return ScheduleKind::OneFOneB;
  if (name == "interleaved" || name == "interleaved-1f1b") return ScheduleKind::Interleaved;
  if (name == "zb-h1") return ScheduleKind::ZeroBubbleH1;
  PP3D_FAIL("unknown pipeline schedule '{}': expected gpipe, 1f1b, interleaved or zb-h1", name);
}

const char* schedule_name(ScheduleKind k) {
  switch (k) {
    case ScheduleKind::GPipe: return "gpipe";
    case ScheduleKind::OneFOneB: return "1f1b";
    case ScheduleKind::Interleaved: return "interleaved";
    case ScheduleKind::ZeroBubbleH1: return "zb-h1";
  }
  return "?";
}

bool splits_backward(ScheduleKind k) { return k == ScheduleKind::ZeroBubbleH1; }

void check_schedule_args(ScheduleKind kind, int pp, int v, int m) {
  PP3D_CHECK(pp >= 1, "pipeline schedule {}: pp must be >= 1, got {}", schedule_name(kind), pp);
  PP3D_CHECK(m >= 1, "pipeline schedule {}: needs at least one micro-batch, got {}", schedule_name(kind), m);
  if (kind != ScheduleKind::Interleaved) {
    PP3D_CHECK(v == 1, "pipeline schedule {} uses one model chunk per rank, got v = {} (use 'interleaved')",
               schedule_name(kind), v);
    return;
  }
  PP3D_CHECK(v >= 2, "interleaved pipeline schedule needs v >= 2 virtual stages per rank, got {} (use 1f1b)", v);
  PP3D_CHECK(pp >= 2, "interleaved pipeline schedule needs pp >= 2, got {}", pp);
  PP3D_CHECK(m % pp == 0,
             "interleaved pipeline schedule needs the number of micro-batches ({}) to be a multiple of pp ({}), "
             "as in Megatron-LM",
             m, pp);
}

std::vector<PipeAction> compute_order(ScheduleKind kind, int pp, int rank, int v, int m) {
  check_schedule_args(kind, pp, v, m);
  PP3D_CHECK(rank >= 0 && rank < pp, "pipeline rank {} out of range [0, {})", rank, pp);
  std::vector<PipeAction> out;
  auto F = [&](int c, int mb) { out.push_back({PipeAction::Forward, c, mb}); };
  auto B = [&](int c, int mb) { out.push_back({PipeAction::Backward, c, mb}); };
  auto I = [&](int c, int mb) { out.push_back({PipeAction::BackwardInput, c, mb}); };
  auto W = [&](int c, int mb) { out.push_back({PipeAction::BackwardWeight, c, mb}); };
  switch (kind) {
    case ScheduleKind::GPipe:
      for (int i = 0; i < m; ++i) F(0, i);
      for (int i = 0; i < m; ++i) B(0, i);
      break;
    case ScheduleKind::OneFOneB: {
      const int warmup = std::min(pp - rank - 1, m);
      for (int i = 0; i < warmup; ++i) F(0, i);
      for (int i = 0; i < m - warmup; ++i) {
        F(0, warmup + i);
        B(0, i);
      }
      for (int i = m - warmup; i < m; ++i) B(0, i);
      break;
    }
    case ScheduleKind::Interleaved: {
      // Megatron-LM's forward_backward_pipelining_with_interleaving: the k-th
      // forward runs chunk (k mod pp*v) / pp on micro-batch
      // (k / (pp*v)) * pp + k mod pp; backwards visit the chunks in reverse.
      const int total = m * v;
      auto chunk_of = [&](int k, bool fwd) {
        const int c = (k % (pp * v)) / pp;
        return fwd ? c : v - 1 - c;
      };
      auto mb_of = [&](int k) { return (k / (pp * v)) * pp + k % pp; };
      int warmup = total;
      if (m != pp) warmup = std::min((pp - rank - 1) * 2 + (v - 1) * pp, total);
      for (int k = 0; k < warmup; ++k) F(chunk_of(k, true), mb_of(k));
      for (int k = 0; k < total - warmup; ++k) {
        F(chunk_of(warmup + k, true), mb_of(warmup + k));
        B(chunk_of(k, false), mb_of(k));
      }
      for (int k = total - warmup; k < total; ++k) B(chunk_of(k, false), mb_of(k));
      break;
    }
    case ScheduleKind::ZeroBubbleH1: {
      // Qi et al., "Zero Bubble Pipeline Parallelism" (ICLR 2024), ZB-H1: 1F1B's
      // warm-up and steady state with the input-gradient part B on the
      // critical path, and each W deferred by `rank` backwards so that it
      // fills the time rank waits for gradients from downstream (the last
      // rank defers pp - 1 of them, rank 0 none); the deferred W's end the
      // step. Full activations in flight as 1F1B (pp - rank), plus the
      // inputs of at most `rank` pending W's.
      const int warmup = std::min(pp - rank - 1, m), defer = rank;
      for (int i = 0; i < warmup; ++i) F(0, i);
      int next_w = 0;
      for (int i = 0; i < m; ++i) {
        if (warmup + i < m) F(0, warmup + i);
        I(0, i);
        if (i >= defer) W(0, next_w++);
      }
      while (next_w < m) W(0, next_w++);
      break;
    }
  }
  return out;
}

namespace {

// T_F = T_B = T_W: a full backward costs 2, its input and weight parts 1 each.
constexpr int64_t kForwardCost = 1, kBackwardCost = 2, kInputGradCost = 1, kWeightGradCost = 1;

int64_t cost(PipeAction::Kind k) {
  switch (k) {
    case PipeAction::Forward: return kForwardCost;
    case PipeAction::Backward: return kBackwardCost;
    case PipeAction::BackwardInput: return kInputGradCost;
    case PipeAction::BackwardWeight: return kWeightGradCost;
  }
  return 0;
}

// Simulated end times of every forward / backward (its input part when
// split), indexed [virtual stage][mb].
struct Timeline {
  std::vector<std::vector<int64_t>> fend, bend;
  std::vector<std::vector<int64_t>> start;  // [rank][op index]
  int64_t makespan = 0;
};

Timeline simulate(const std::vector<std::vector<PipeAction>>& orders, int pp, int v, int m) {
  const int S = pp * v;
  Timeline tl;
  tl.fend.assign(static_cast<std::size_t>(S), std::vector<int64_t>(static_cast<std::size_t>(m), -1));
  tl.bend = tl.fend;
  tl.start.resize(static_cast<std::size_t>(pp));
  std::vector<std::size_t> idx(static_cast<std::size_t>(pp), 0);
  std::vector<int64_t> free_at(static_cast<std::size_t>(pp), 0);
  enum : char { kNotStarted, kWeightPending, kDone };
  std::vector<std::vector<char>> weight_state(static_cast<std::size_t>(S),
                                              std::vector<char>(static_cast<std::size_t>(m), kNotStarted));
  bool progress = true;
  while (progress) {
    progress = false;
    for (int r = 0; r < pp; ++r) {
      const auto& ord = orders[static_cast<std::size_t>(r)];
      auto& i = idx[static_cast<std::size_t>(r)];
      while (i < ord.size()) {
        const PipeAction& a = ord[i];
        PP3D_CHECK(a.chunk >= 0 && a.chunk < v && a.mb >= 0 && a.mb < m,
                   "pipeline schedule bug: rank {} op {} names chunk {} micro-batch {} (v = {}, m = {})", r, i, a.chunk,
                   a.mb, v, m);
        const int s = a.chunk * pp + r;
        const auto mb = static_cast<std::size_t>(a.mb);
        int64_t ready = free_at[static_cast<std::size_t>(r)];
        auto& wstate = weight_state[static_cast<std::size_t>(s)][mb];
        if (a.kind == PipeAction::Forward) {
          PP3D_CHECK(tl.fend[static_cast<std::size_t>(s)][mb] < 0,
                     "pipeline schedule bug: rank {} runs forward of chunk {} micro-batch {} twice", r, a.chunk, a.mb);
          if (s > 0) {
            const int64_t t = tl.fend[static_cast<std::size_t>(s - 1)][mb];
            if (t < 0) break;
            ready = std::max(ready, t);
          }
        } else if (a.kind == PipeAction::BackwardWeight) {
          PP3D_CHECK(wstate == kWeightPending,
                     "pipeline schedule bug: rank {} runs the weight part of chunk {} micro-batch {} without a "
                     "pending input part",
                     r, a.chunk, a.mb);
          wstate = kDone;
        } else {
          PP3D_CHECK(tl.fend[static_cast<std::size_t>(s)][mb] >= 0 && wstate == kNotStarted,
                     "pipeline schedule bug: rank {} runs backward of chunk {} micro-batch {} before its forward "
                     "or twice",
                     r, a.chunk, a.mb);
          if (s < S - 1) {
            const int64_t t = tl.bend[static_cast<std::size_t>(s + 1)][mb];
            if (t < 0) break;
            ready = std::max(ready, t);
          }
          wstate = a.kind == PipeAction::BackwardInput ? kWeightPending : kDone;
        }
        const int64_t end = ready + cost(a.kind);
        if (a.kind == PipeAction::Forward) tl.fend[static_cast<std::size_t>(s)][mb] = end;
        if (a.kind == PipeAction::Backward || a.kind == PipeAction::BackwardInput)
          tl.bend[static_cast<std::size_t>(s)][mb] = end;
        tl.start[static_cast<std::size_t>(r)].push_back(ready);
        free_at[static_cast<std::size_t>(r)] = end;
        tl.makespan = std::max(tl.makespan, end);
        ++i;
        progress = true;
      }
    }
  }
  for (int r = 0; r < pp; ++r)
    PP3D_CHECK(idx[static_cast<std::size_t>(r)] == orders[static_cast<std::size_t>(r)].size(),
               "pipeline schedule bug: the compute orders deadlock (rank {} stuck at op {})", r,
               idx[static_cast<std::size_t>(r)]);
  for (const auto& row : weight_state)
    for (char w : row)
      PP3D_CHECK(w == kDone, "pipeline schedule bug: a micro-batch's backward (or its weight part) never ran");
  return tl;
}

int make_tag(PipeTransfer::Kind kind, int send_stage, int mb, int S) {
  return static_cast<int>(((static_cast<int64_t>(mb) * S + send_stage) * 2 + (kind == PipeTransfer::Gradient)) %
                          32768);
}

}  // namespace

std::vector<PipeInstr> make_pipeline_plan(ScheduleKind kind, int pp, int rank, int v, int m) {
  std::vector<std::vector<PipeAction>> orders;
  for (int r = 0; r < pp; ++r) orders.push_back(compute_order(kind, pp, r, v, m));
  const Timeline tl = simulate(orders, pp, v, m);
  const int S = pp * v;
  const auto& ord = orders[static_cast<std::size_t>(rank)];
  const auto& start = tl.start[static_cast<std::size_t>(rank)];
  const std::size_t n = ord.size();
  // Boundary j sits before op j (j == n: after the last op).
  std::vector<std::vector<PipeTransfer>> boundary(n + 1);
  auto first_boundary_at_or_after = [&](int64_t t) {
    std::size_t j = 0;
    while (j < n && start[j] < t) ++j;
    return j;
  };
  for (std::size_t j = 0; j < n; ++j) {
    const PipeAction& a = ord[j];
    const int s = a.chunk * pp + rank;
    const auto mb = static_cast<std::size_t>(a.mb);
    if (a.kind == PipeAction::Forward) {
      if (s > 0) {  // receive the activation of stage s - 1
        const std::size_t b = first_boundary_at_or_after(tl.fend[static_cast<std::size_t>(s - 1)][mb]);
        PP3D_CHECK(b <= j, "pipeline plan bug: activation arrives after its use");
        boundary[b].push_back({PipeTransfer::Activation, false, a.chunk, a.mb, (s - 1) % pp,
                               make_tag(PipeTransfer::Activation, s - 1, a.mb, S)});
      }
      if (s < S - 1)
        boundary[j + 1].push_back({PipeTransfer::Activation, true, a.chunk, a.mb, (s + 1) % pp,
                                   make_tag(PipeTransfer::Activation, s, a.mb, S)});
    } else if (a.kind != PipeAction::BackwardWeight) {  // the weight part communicates nothing
      if (s < S - 1) {  // receive the gradient from stage s + 1
        const std::size_t b = first_boundary_at_or_after(tl.bend[static_cast<std::size_t>(s + 1)][mb]);
        PP3D_CHECK(b <= j, "pipeline plan bug: gradient arrives after its use");
        boundary[b].push_back({PipeTransfer::Gradient, false, a.chunk, a.mb, (s + 1) % pp,
                               make_tag(PipeTransfer::Gradient, s + 1, a.mb, S)});
      }
      if (s > 0)
        boundary[j + 1].push_back({PipeTransfer::Gradient, true, a.chunk, a.mb, (s - 1) % pp,
                                   make_tag(PipeTransfer::Gradient, s, a.mb, S)});
    }
  }
  std::vector<PipeInstr> plan;
  for (std::size_t j = 0; j <= n; ++j) {
    if (!boundary[j].empty()) {
      PipeInstr c;
      c.is_compute = false;
      c.transfers = std::move(boundary[j]);
      plan.push_back(std::move(c));
    }
    if (j < n) plan.push_back(PipeInstr{true, ord[j], {}});
  }
  return plan;
}

double simulated_bubble(ScheduleKind kind, int pp, int v, int m) {
  std::vector<std::vector<PipeAction>> orders;
  for (int r = 0; r < pp; ++r) orders.push_back(compute_order(kind, pp, r, v, m));
  return simulated_bubble(orders, pp, v, m);
}

double simulated_bubble(const std::vector<std::vector<PipeAction>>& orders, int pp, int v, int m) {
  PP3D_CHECK(static_cast<int>(orders.size()) == pp, "simulated_bubble: {} compute orders for pp = {}", orders.size(),
             pp);
  const Timeline tl = simulate(orders, pp, v, m);
  const auto compute = static_cast<double>(static_cast<int64_t>(v) * m * (kForwardCost + kBackwardCost));
  return (static_cast<double>(tl.makespan) - compute) / compute;
}

double theoretical_bubble(ScheduleKind kind, int pp, int v, int m) {
  const double b = static_cast<double>(pp - 1) / static_cast<double>(m);
  switch (kind) {
    case ScheduleKind::Interleaved: return b / static_cast<double>(v);
    case ScheduleKind::ZeroBubbleH1:
      // (pp - 1)(T_F + T_B - T_W) idle per rank over m (T_F + T_B + T_W) of work.
      if (m >= pp) return b / 3.0;
      return static_cast<double>(2 * pp - m - 1) / (3.0 * static_cast<double>(m));
    default: return b;
  }
}

namespace {

// Peak of (started micro-batches) - (finished ones), `done` saying which action finishes one.
int peak_in_flight(const std::vector<PipeAction>& order, bool (*done)(PipeAction::Kind)) {
  int cur = 0, best = 0;
  for (const auto& a : order) {
    if (a.kind == PipeAction::Forward) ++cur;
    if (done(a.kind)) --cur;
    best = std::max(best, cur);
  }
  return best;
}

}  // namespace

int max_in_flight(const std::vector<PipeAction>& order) {
  return peak_in_flight(order, [](PipeAction::Kind k) {
    return k == PipeAction::Backward || k == PipeAction::BackwardWeight;
  });
}

int max_in_flight_before_input_grad(const std::vector<PipeAction>& order) {
  return peak_in_flight(order, [](PipeAction::Kind k) {
    return k == PipeAction::Backward || k == PipeAction::BackwardInput;
  });
}

}  // namespace pp3d
