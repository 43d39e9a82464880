// PipelineStage: construction over the rank's chunks, parameters and the
// shared parameters (checksum check, value sync, gradient all-reduce).
#include <chrono>
#include <cstring>

#include "pp3d/core/log.h"
#include "pp3d/parallel/pipeline.h"
#include "pp3d/parallel/process_grid.h"

namespace pp3d {

namespace {

uint64_t fnv1a(const Tensor& t) {
  const Tensor h = t.device().is_cpu() ? t : t.to(Device::cpu());
  const auto* p = static_cast<const unsigned char*>(h.raw());
  uint64_t x = 1469598103934665603ull;
  for (std::size_t i = 0; i < h.nbytes(); ++i) x = (x ^ p[i]) * 1099511628211ull;
  return x;
}

}  // namespace

PipelineStage::PipelineStage(std::vector<std::unique_ptr<Module>> chunks, std::shared_ptr<Communicator> pp_group,
                             std::shared_ptr<Communicator> shared_group, const PipelineConfig& pipe,
                             const PipelineSplit& split)
    : pipe_(pipe), pp_group_(std::move(pp_group)), shared_group_(std::move(shared_group)), split_(split),
      chunks_(std::move(chunks)) {
  PP3D_CHECK(pp_group_ != nullptr, "PipelineStage needs a pipeline-parallel communicator");
  pp_rank_ = pp_group_->rank();
  pp_size_ = pp_group_->size();
  const int v = pipe_.virtual_stages;
  PP3D_CHECK(v >= 1, "PipelineConfig.virtual_stages must be >= 1, got {}", v);
  PP3D_CHECK(pipe_.schedule == ScheduleKind::Interleaved || v == 1,
             "pipeline schedule {} uses one chunk per rank; virtual_stages = {} needs schedule 'interleaved'",
             schedule_name(pipe_.schedule), v);
  PP3D_CHECK(pipe_.schedule != ScheduleKind::Interleaved || (v >= 2 && pp_size_ >= 2),
             "interleaved pipeline schedule needs pp >= 2 and virtual_stages >= 2 (got pp={}, v={})", pp_size_, v);
  PP3D_CHECK(pipe_.micro_batch_size >= 1, "PipelineConfig.micro_batch_size must be >= 1, got {}",
             pipe_.micro_batch_size);
  PP3D_CHECK(pipe_.seq_len >= 1, "PipelineConfig.seq_len must be >= 1 (the positions per row the modules' "
             "input_shape takes), got {}", pipe_.seq_len);
  PP3D_CHECK(static_cast<int>(chunks_.size()) == v, "PipelineStage got {} chunk(s) but virtual_stages is {}",
             chunks_.size(), v);
  for (std::size_t c = 0; c < chunks_.size(); ++c)
    PP3D_CHECK(chunks_[c] != nullptr && !chunks_[c]->layers().empty(), "PipelineStage: chunk {} is null or has no "
               "layers", c);
  seq_ = pipe_.seq_len;
  if (split_.layers_per_stage.empty()) {
    split_.pp = pp_size_;
    split_.v = v;
  }
  PP3D_CHECK(split_.pp == pp_size_ && split_.v == v, "PipelineStage: the split is for pp={} v={}, the stage has "
             "pp={} v={}", split_.pp, split_.v, pp_size_, v);
  if (!shared_copies().empty() && pp_size_ > 1) {
    PP3D_CHECK(shared_group_ != nullptr && shared_group_->size() >= 2,
               "pipeline rank {} holds shared parameter copies (e.g. a tied wte) but the shared group is {} (needs "
               "the stages holding the copies, e.g. the first and last pipeline stage)",
               pp_rank_, shared_group_ ? fmt::format("of size {}", shared_group_->size()) : "missing");
    check_tied_embedding();
  }
  pp_group_->barrier();  // common clock origin for the trace
  clock_origin_ = 0;
  clock_origin_ = now_us();
  if (pp_rank_ == 0)
    logger()->debug("pipeline: {} schedule, pp={} v={}, split {}", schedule_name(pipe_.schedule), pp_size_, v,
                    split_.layers_per_stage.empty() ? std::string("(given chunks)") : split_.str());
}

PipelineStage::~PipelineStage() = default;

double PipelineStage::now_us() const {
  const auto t = std::chrono::steady_clock::now().time_since_epoch();
  return std::chrono::duration<double, std::micro>(t).count() - clock_origin_;
}

bool PipelineStage::has_embedding() const { return pp_rank_ == 0; }
bool PipelineStage::has_head() const { return pp_rank_ == pp_size_ - 1; }

std::vector<Parameter*> PipelineStage::shared_copies() {
  std::vector<Parameter*> out;
  for (auto& c : chunks_)
    for (Parameter* p : c->shared_parameters()) out.push_back(p);
  return out;
}

std::vector<Module*> PipelineStage::modules() {
  std::vector<Module*> out;
  for (auto& c : chunks_) out.push_back(c.get());
  return out;
}

void PipelineStage::check_tied_embedding() {
  const std::vector<Parameter*> shared = shared_copies();
  if (shared.empty() || pp_size_ == 1 || shared_group_ == nullptr || shared_group_->size() < 2) return;
  uint64_t h = 1469598103934665603ull;
  for (Parameter* p : shared) h = (h ^ fnv1a(p->value)) * 1099511628211ull;
  std::vector<int32_t> mine(2);
  std::memcpy(mine.data(), &h, sizeof h);
  const Tensor in = Tensor::from_vector_i32({2}, mine);
  Tensor all = Tensor::zeros({2 * shared_group_->size()}, DType::I32);
  shared_group_->all_gather(in, all);
  const auto* a = all.data<int32_t>();
  uint64_t h0 = 0;
  std::memcpy(&h0, a, sizeof h0);
  for (int r = 1; r < shared_group_->size(); ++r) {
    uint64_t hr = 0;
    std::memcpy(&hr, a + 2 * r, sizeof hr);
    PP3D_CHECK(h0 == hr,
               "shared parameters (tied embedding): the copy on shared-group rank {} differs from rank 0's "
               "(checksums {:016x} vs {:016x}); initialise both with the same seed or call sync_tied_embedding()",
               r, hr, h0);
  }
}

void PipelineStage::sync_tied_embedding() {
  if (pp_size_ == 1 || shared_group_ == nullptr || shared_group_->size() < 2) return;
  for (Parameter* p : shared_copies()) shared_group_->broadcast(p->value, 0);
}

void PipelineStage::reduce_tied_grads() {
  if (pp_size_ == 1 || shared_group_ == nullptr || shared_group_->size() < 2) return;
  for (Parameter* p : shared_copies()) shared_group_->all_reduce(p->grad, ReduceOp::Sum);
}

std::vector<Parameter*> PipelineStage::parameters() {
  std::vector<Parameter*> out;
  for (auto& c : chunks_)
    for (Parameter* p : c->parameters()) out.push_back(p);
  return out;
}

void PipelineStage::zero_grad() {
  for (auto& c : chunks_) c->zero_grad();
}

SumSquaresReducer PipelineStage::sum_squares_reducer() const {
  std::shared_ptr<Communicator> g = pp_group_;
  return [g](double local) {
    if (g->size() == 1) return local;
    // Exact double sum: gather every rank's value (as two i32 words) and add in rank order.
    std::vector<int32_t> w(2);
    std::memcpy(w.data(), &local, sizeof local);
    const Tensor in = Tensor::from_vector_i32({2}, w);
    Tensor all = Tensor::zeros({2 * g->size()}, DType::I32);
    g->all_gather(in, all);
    double sum = 0;
    for (int r = 0; r < g->size(); ++r) {
      double x = 0;
      std::memcpy(&x, all.data<int32_t>() + 2 * r, sizeof x);
      sum += x;
    }
    return sum;
  };
}

const std::vector<PipeInstr>& PipelineStage::plan(int num_micro_batches) {
  auto it = plans_.find(num_micro_batches);
  if (it == plans_.end())
    it = plans_
             .emplace(num_micro_batches, make_pipeline_plan(pipe_.schedule, pp_size_, pp_rank_,
                                                            pipe_.virtual_stages, num_micro_batches))
             .first;
  return it->second;
}

}  // namespace pp3d
