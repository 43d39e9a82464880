// ProcessGrid: the (tp, dp, pp) layout of the world and its process groups.
//
// Megatron order: tensor-parallel rank varies fastest, then data, then
// pipeline: rank = tp_rank + tp * (dp_rank + dp * pp_rank). dp is derived
// (world / (tp * pp)). Groups are made once, in the constructor, by splitting
// the world (a collective: every rank constructs the grid together):
//   TP  ranks differing only in tp_rank        DP  ... only in dp_rank
//   PP  ... only in pp_rank                    MP  (TP x PP) ranks sharing dp_rank
//   embedding: first and last pipeline stage of each (tp_rank, dp_rank) — with
//   pp == 1 just the rank itself; nullptr on middle stages.
// group_ranks() is the same layout as a pure function (for tests and planning).
// The grid shares ownership of the world and owns the groups. Read-only after
// construction; the groups follow Communicator's thread-safety.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "pp3d/comm/communicator.h"

namespace pp3d {

enum class GroupKind { TP, DP, PP, MP, Embedding };

const char* group_kind_name(GroupKind k);

class ProcessGrid {
 public:
  // Throws pp3d::Error when tp or pp is < 1 or tp * pp does not divide world->size().
  ProcessGrid(std::shared_ptr<Communicator> world, int tp, int pp);

  int world_size() const { return world_->size(); }
  int rank() const { return world_->rank(); }
  int tp() const { return tp_; }
  int dp() const { return dp_; }
  int pp() const { return pp_; }
  int tp_rank() const { return tp_rank_; }
  int dp_rank() const { return dp_rank_; }
  int pp_rank() const { return pp_rank_; }
  bool is_first_stage() const { return pp_rank_ == 0; }
  bool is_last_stage() const { return pp_rank_ == pp_ - 1; }

  const std::shared_ptr<Communicator>& world() const { return world_; }
  const std::shared_ptr<Communicator>& tp_group() const { return tp_group_; }
  const std::shared_ptr<Communicator>& dp_group() const { return dp_group_; }
  const std::shared_ptr<Communicator>& pp_group() const { return pp_group_; }
  const std::shared_ptr<Communicator>& mp_group() const { return mp_group_; }
  // nullptr on ranks that are neither the first nor the last pipeline stage.
  const std::shared_ptr<Communicator>& embedding_group() const { return embedding_group_; }

  // Global rank of a grid coordinate.
  static int rank_of(int tp_rank, int dp_rank, int pp_rank, int tp, int dp);
  // Checks the layout; returns dp. Error names the numbers and how to fix them.
  static int derive_dp(int world, int tp, int pp);
  // Every group of `kind` as lists of global ranks, each in rank order within
  // the group (its index = the member's rank in the group), groups ordered by
  // their smallest member.
  static std::vector<std::vector<int>> group_ranks(int world, int tp, int pp, GroupKind kind);

  // "tp=2 dp=2 pp=4 (world 16)"
  std::string str() const;

 private:
  std::shared_ptr<Communicator> make_group(GroupKind kind);

  std::shared_ptr<Communicator> world_;
  int tp_, dp_, pp_;
  int tp_rank_, dp_rank_, pp_rank_;
  std::shared_ptr<Communicator> tp_group_, dp_group_, pp_group_, mp_group_, embedding_group_;
};

}  // namespace pp3d
