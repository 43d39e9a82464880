#include "pp3d/parallel/process_grid.h"

#include <algorithm>

namespace pp3d {

const char* group_kind_name(GroupKind k) {
  switch (k) {
    case GroupKind::TP: return "tp";
    case GroupKind::DP: return "dp";
    case GroupKind::PP: return "pp";
    case GroupKind::MP: return "mp";
    case GroupKind::Embedding: return "embedding";
  }
  return "?";
}

int ProcessGrid::rank_of(int tp_rank, int dp_rank, int pp_rank, int tp, int dp) {
  return tp_rank + tp * (dp_rank + dp * pp_rank);
}

int ProcessGrid::derive_dp(int world, int tp, int pp) {
  PP3D_CHECK(world >= 1, "process grid: world size must be >= 1, got {}", world);
  PP3D_CHECK(tp >= 1 && pp >= 1, "process grid: tp={} and pp={} must both be >= 1", tp, pp);
  PP3D_CHECK(world % (tp * pp) == 0,
             "world {} is not divisible by tp*pp = {} (tp={}, pp={}): choose tp*pp dividing the number of ranks "
             "(or launch a multiple of {} ranks)",
             world, tp * pp, tp, pp, tp * pp);
  return world / (tp * pp);
}

std::vector<std::vector<int>> ProcessGrid::group_ranks(int world, int tp, int pp, GroupKind kind) {
  const int dp = derive_dp(world, tp, pp);
  std::vector<std::vector<int>> groups;
  switch (kind) {
    case GroupKind::TP:
      for (int p = 0; p < pp; ++p)
        for (int d = 0; d < dp; ++d) {
          std::vector<int> g;
          for (int t = 0; t < tp; ++t) g.push_back(rank_of(t, d, p, tp, dp));
          groups.push_back(g);
        }
      break;
    case GroupKind::DP:
      for (int p = 0; p < pp; ++p)
        for (int t = 0; t < tp; ++t) {
          std::vector<int> g;
          for (int d = 0; d < dp; ++d) g.push_back(rank_of(t, d, p, tp, dp));
          groups.push_back(g);
        }
      break;
    case GroupKind::PP:
      for (int d = 0; d < dp; ++d)
        for (int t = 0; t < tp; ++t) {
          std::vector<int> g;
          for (int p = 0; p < pp; ++p) g.push_back(rank_of(t, d, p, tp, dp));
          groups.push_back(g);
        }
      break;
    case GroupKind::MP:
      for (int d = 0; d < dp; ++d) {
        std::vector<int> g;
        for (int p = 0; p < pp; ++p)
          for (int t = 0; t < tp; ++t) g.push_back(rank_of(t, d, p, tp, dp));
        groups.push_back(g);
      }
      break;
    case GroupKind::Embedding:
      for (int d = 0; d < dp; ++d)
        for (int t = 0; t < tp; ++t) {
          std::vector<int> g{rank_of(t, d, 0, tp, dp)};
          if (pp > 1) g.push_back(rank_of(t, d, pp - 1, tp, dp));
          groups.push_back(g);
        }
      break;
  }
  std::sort(groups.begin(), groups.end());
  return groups;
}

ProcessGrid::ProcessGrid(std::shared_ptr<Communicator> world, int tp, int pp)
    : world_(std::move(world)), tp_(tp), pp_(pp) {
  PP3D_CHECK(world_ != nullptr, "ProcessGrid needs a world communicator");
  dp_ = derive_dp(world_->size(), tp, pp);
  const int r = world_->rank();
  tp_rank_ = r % tp_;
  dp_rank_ = (r / tp_) % dp_;
  pp_rank_ = r / (tp_ * dp_);
  // Every rank takes part in every split, in the same order.
  tp_group_ = make_group(GroupKind::TP);
  dp_group_ = make_group(GroupKind::DP);
  pp_group_ = make_group(GroupKind::PP);
  mp_group_ = make_group(GroupKind::MP);
  embedding_group_ = make_group(GroupKind::Embedding);
}

std::shared_ptr<Communicator> ProcessGrid::make_group(GroupKind kind) {
  const auto groups = group_ranks(world_->size(), tp_, pp_, kind);
  const int me = world_->rank();
  for (std::size_t g = 0; g < groups.size(); ++g) {
    const auto& members = groups[g];
    const auto it = std::find(members.begin(), members.end(), me);
    if (it == members.end()) continue;
    const int key = static_cast<int>(it - members.begin());
    return world_->split(static_cast<int>(g), key, fmt::format("{}[{}]", group_kind_name(kind), g));
  }
  return world_->split(-1, 0, group_kind_name(kind));  // not a member (middle pipeline stages)
}

std::string ProcessGrid::str() const {
  return fmt::format("tp={} dp={} pp={} (world {})", tp_, dp_, pp_, world_->size());
}

}  // namespace pp3d
