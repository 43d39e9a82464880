// The CheckpointTensor lists of a model's parameters, the serial AdamW and the
// ZeroOptimizer: which parts of which global tensors a rank holds, and which
// of them it writes (one writer per element: tp_rank 0 for TP-replicated
// tensors, the embedding stage for the tied wte, dp_rank 0 or the DP owner).
#include "pp3d/core/error.h"
#include "pp3d/parallel/zero_optimizer.h"
#include "pp3d/train/checkpoint.h"
#include "pp3d/optim/optimizer.h"

namespace pp3d {

namespace {

CheckpointTensor part_of(const Parameter& p, const std::string& suffix, const Tensor& data, bool save,
                         int64_t begin = 0, int64_t end = -1) {
  CheckpointTensor t;
  t.name = p.name + suffix;
  t.global_shape = p.global_shape;
  t.shard = p.shard;
  t.begin = begin;
  t.end = end;
  t.data = data;
  t.save = save;
  return t;
}

}  // namespace

std::vector<CheckpointTensor> parameter_checkpoint_tensors(const std::vector<Parameter*>& params, bool writer) {
  std::vector<CheckpointTensor> out;
  for (Parameter* p : params) {
    PP3D_CHECK(p != nullptr && p->value.defined(), "checkpoint: parameter '{}' has no value (ZeRO-3 model? use "
               "checkpoint_tensors(ZeroOptimizer&))", p ? p->name : std::string("null"));
    out.push_back(part_of(*p, "", p->value, writer && p->counted_in_norm));
  }
  return out;
}

std::vector<CheckpointTensor> checkpoint_tensors(AdamW& opt, bool writer) {
  std::vector<CheckpointTensor> out = parameter_checkpoint_tensors(opt.params(), writer);
  const std::vector<AdamW::State>& st = opt.state();
  for (std::size_t i = 0; i < opt.params().size(); ++i) {
    const Parameter& p = *opt.params()[i];
    const bool save = writer && p.counted_in_norm;
    out.push_back(part_of(p, ".exp_avg", st[i].m, save));
    out.push_back(part_of(p, ".exp_avg_sq", st[i].v, save));
    if (st[i].master.defined()) {
      out.push_back(part_of(p, ".master", st[i].master, save));
      out.back().fallback = p.name;
    }
  }
  return out;
}

std::vector<CheckpointTensor> checkpoint_tensors(ZeroOptimizer& zero) {
  const int stage = zero.stage();
  const bool dp_root = zero.buckets().dp().rank() == 0;
  std::vector<CheckpointTensor> out;
  if (stage < 3) {
    // Full local values: loaded everywhere; saved by dp_rank 0 in stage 0 only.
    out = parameter_checkpoint_tensors(zero.all_parameters(), stage == 0 && dp_root);
  }
  for (const ZeroOptimizer::OwnedRange& r : zero.owned_ranges()) {
    const Parameter& p = *r.param;
    const bool save = p.counted_in_norm && (stage > 0 || dp_root);
    if (stage > 0) {  // owned values: saved by their owner (stage 3: also the load target)
      out.push_back(part_of(p, "", r.value, save, r.begin, r.end));
      out.back().load = stage == 3;
    }
    out.push_back(part_of(p, ".exp_avg", r.m, save, r.begin, r.end));
    out.push_back(part_of(p, ".exp_avg_sq", r.v, save, r.begin, r.end));
    if (r.master.defined()) {
      out.push_back(part_of(p, ".master", r.master, save, r.begin, r.end));
      out.back().fallback = p.name;
    }
  }
  return out;
}

}  // namespace pp3d
