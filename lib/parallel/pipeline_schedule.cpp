// Pipeline schedules: compute orders (GPipe, 1F1B, interleaved 1F1B) and the
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
  PP3D_FAIL("unknown pipeline schedule '{}': expected gpipe, 1f1b or interleaved", name);
}

const char* schedule_name(ScheduleKind k) {
  switch (k) {
    case ScheduleKind::GPipe: return "gpipe";
    case ScheduleKind::OneFOneB: return "1f1b";
    case ScheduleKind::Interleaved: return "interleaved";
  }
  return "?";
}

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
  }
  return out;
}

namespace {

constexpr int64_t kForwardCost = 1, kBackwardCost = 2;

// Simulated end times of every forward / backward, indexed [virtual stage][mb].
struct Timeline {
  std::vector<std::vector<int64_t>> fend, bend;
  std::vector<std::vector<int64_t>> start;  // [rank][op index]
};

Timeline simulate(const std::vector<std::vector<PipeAction>>& orders, int pp, int v, int m) {
  const int S = pp * v;
  Timeline tl;
  tl.fend.assign(static_cast<std::size_t>(S), std::vector<int64_t>(static_cast<std::size_t>(m), -1));
  tl.bend = tl.fend;
  tl.start.resize(static_cast<std::size_t>(pp));
  std::vector<std::size_t> idx(static_cast<std::size_t>(pp), 0);
  std::vector<int64_t> free_at(static_cast<std::size_t>(pp), 0);
  bool progress = true;
  while (progress) {
    progress = false;
    for (int r = 0; r < pp; ++r) {
      const auto& ord = orders[static_cast<std::size_t>(r)];
      auto& i = idx[static_cast<std::size_t>(r)];
      while (i < ord.size()) {
        const PipeAction& a = ord[i];
        const int s = a.chunk * pp + r;
        const auto mb = static_cast<std::size_t>(a.mb);
        int64_t ready = free_at[static_cast<std::size_t>(r)];
        if (a.kind == PipeAction::Forward) {
          if (s > 0) {
            const int64_t t = tl.fend[static_cast<std::size_t>(s - 1)][mb];
            if (t < 0) break;
            ready = std::max(ready, t);
          }
        } else {
          PP3D_CHECK(tl.fend[static_cast<std::size_t>(s)][mb] >= 0,
                     "pipeline schedule bug: rank {} runs backward of chunk {} micro-batch {} before its forward", r,
                     a.chunk, a.mb);
          if (s < S - 1) {
            const int64_t t = tl.bend[static_cast<std::size_t>(s + 1)][mb];
            if (t < 0) break;
            ready = std::max(ready, t);
          }
        }
        const int64_t end = ready + (a.kind == PipeAction::Forward ? kForwardCost : kBackwardCost);
        (a.kind == PipeAction::Forward ? tl.fend : tl.bend)[static_cast<std::size_t>(s)][mb] = end;
        tl.start[static_cast<std::size_t>(r)].push_back(ready);
        free_at[static_cast<std::size_t>(r)] = end;
        ++i;
        progress = true;
      }
    }
  }
  for (int r = 0; r < pp; ++r)
    PP3D_CHECK(idx[static_cast<std::size_t>(r)] == orders[static_cast<std::size_t>(r)].size(),
               "pipeline schedule bug: the compute orders deadlock (rank {} stuck at op {})", r,
               idx[static_cast<std::size_t>(r)]);
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
    } else {
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
  const Timeline tl = simulate(orders, pp, v, m);
  int64_t makespan = 0;
  for (const auto& row : tl.bend)
    for (int64_t t : row) makespan = std::max(makespan, t);
  const auto compute = static_cast<double>(static_cast<int64_t>(v) * m * (kForwardCost + kBackwardCost));
  return (static_cast<double>(makespan) - compute) / compute;
}

double theoretical_bubble(ScheduleKind kind, int pp, int v, int m) {
  const double b = static_cast<double>(pp - 1) / static_cast<double>(m);
  return kind == ScheduleKind::Interleaved ? b / static_cast<double>(v) : b;
}

int max_in_flight(const std::vector<PipeAction>& order) {
  int cur = 0, best = 0;
  for (const auto& a : order) {
    cur += a.kind == PipeAction::Forward ? 1 : -1;
    best = std::max(best, cur);
  }
  return best;
}

}  // namespace pp3d
