// PipelineStage: construction of the rank's chunks, parameters and the tied
// embedding (checksum check, value sync, gradient all-reduce).
#include <chrono>
#include <cstring>

#include "pp3d/core/log.h"
#include "pp3d/parallel/pipeline.h"
#include "pp3d/parallel/process_grid.h"

namespace pp3d {

namespace {

GptLayout grid_layout(const ProcessGrid& grid, GptLayout base) {
  base.tp_rank = grid.tp_rank();
  base.tp_size = grid.tp();
  if (base.tp_group == nullptr && grid.tp() > 1) base.tp_group = grid.tp_group();
  return base;
}

uint64_t fnv1a(const Tensor& t) {
  const Tensor h = t.device().is_cpu() ? t : t.to(Device::cpu());
  const auto* p = static_cast<const unsigned char*>(h.raw());
  uint64_t x = 1469598103934665603ull;
  for (std::size_t i = 0; i < h.nbytes(); ++i) x = (x ^ p[i]) * 1099511628211ull;
  return x;
}

}  // namespace

PipelineStage::PipelineStage(const GptConfig& config, Backend& backend, std::shared_ptr<Communicator> pp_group,
                             std::shared_ptr<Communicator> embedding_group, const PipelineConfig& pipe,
                             const GptLayout& base_layout, const GptOptions& options)
    : pipe_(pipe), pp_group_(std::move(pp_group)), embedding_group_(std::move(embedding_group)) {
  build(config, backend, base_layout, options);
}

PipelineStage::PipelineStage(const GptConfig& config, Backend& backend, const ProcessGrid& grid,
                             const PipelineConfig& pipe, const GptLayout& base_layout, const GptOptions& options)
    : pipe_(pipe), pp_group_(grid.pp_group()), embedding_group_(grid.embedding_group()) {
  build(config, backend, grid_layout(grid, base_layout), options);
}

PipelineStage::~PipelineStage() = default;

void PipelineStage::build(const GptConfig& config, Backend& backend, const GptLayout& base_layout,
                          const GptOptions& options) {
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
  const GptConfig cfg = config.resolved();
  seq_ = pipe_.seq_len > 0 ? pipe_.seq_len : cfg.max_seq_len;
  PP3D_CHECK(seq_ <= cfg.max_seq_len, "PipelineConfig.seq_len {} exceeds the model's max_seq_len {}", seq_,
             cfg.max_seq_len);
  split_ = PipelineSplit::parse(pipe_.split, cfg.num_layers, pp_size_, v);
  const int S = split_.num_stages();
  for (int c = 0; c < v; ++c) {
    const int s = split_.stage_of(pp_rank_, c);
    GptLayout l = base_layout;
    l.first_layer = split_.first_layer(s);
    l.last_layer = split_.end_layer(s);
    l.has_embedding = s == 0;
    l.has_head = s == S - 1;
    chunks_.push_back(std::make_unique<Gpt>(config, backend, l, options));
  }
  if (cfg.tied_embeddings && pp_size_ > 1 && (has_embedding() || has_head())) {
    PP3D_CHECK(embedding_group_ != nullptr && embedding_group_->size() == 2,
               "pipeline rank {} holds a tied wte copy but the embedding group is {} (needs the first and last "
               "pipeline stage)",
               pp_rank_, embedding_group_ ? fmt::format("of size {}", embedding_group_->size()) : "missing");
    check_tied_embedding();
  }
  pp_group_->barrier();  // common clock origin for the trace
  clock_origin_ = 0;
  clock_origin_ = now_us();
  if (pp_rank_ == 0)
    logger()->debug("pipeline: {} schedule, pp={} v={}, split {}", schedule_name(pipe_.schedule), pp_size_, v,
                    split_.str());
}

double PipelineStage::now_us() const {
  const auto t = std::chrono::steady_clock::now().time_since_epoch();
  return std::chrono::duration<double, std::micro>(t).count() - clock_origin_;
}

bool PipelineStage::has_embedding() const { return pp_rank_ == 0; }
bool PipelineStage::has_head() const { return pp_rank_ == pp_size_ - 1; }

Parameter* PipelineStage::tied_copy() {
  if (!chunks_.front()->config().tied_embeddings) return nullptr;
  if (has_embedding()) return chunks_.front()->find_parameter("wte");
  if (has_head()) return chunks_.back()->find_parameter("wte");
  return nullptr;
}

void PipelineStage::check_tied_embedding() {
  Parameter* wte = tied_copy();
  if (wte == nullptr || pp_size_ == 1 || embedding_group_ == nullptr || embedding_group_->size() < 2) return;
  const uint64_t h = fnv1a(wte->value);
  std::vector<int32_t> mine(2);
  std::memcpy(mine.data(), &h, sizeof h);
  const Tensor in = Tensor::from_vector_i32({2}, mine);
  Tensor all = Tensor::zeros({2 * embedding_group_->size()}, DType::I32);
  embedding_group_->all_gather(in, all);
  const auto* a = all.data<int32_t>();
  uint64_t h0 = 0, h1 = 0;
  std::memcpy(&h0, a, sizeof h0);
  std::memcpy(&h1, a + 2, sizeof h1);
  PP3D_CHECK(h0 == h1,
             "tied embedding: the head stage's wte copy differs from the embedding stage's (checksums {:016x} vs "
             "{:016x}); initialise both with the same seed or call sync_tied_embedding()",
             h0, h1);
}

void PipelineStage::sync_tied_embedding() {
  Parameter* wte = tied_copy();
  if (wte == nullptr || pp_size_ == 1 || embedding_group_ == nullptr || embedding_group_->size() < 2) return;
  embedding_group_->broadcast(wte->value, 0);
}

void PipelineStage::reduce_tied_grads() {
  Parameter* wte = tied_copy();
  if (wte == nullptr || pp_size_ == 1 || embedding_group_ == nullptr || embedding_group_->size() < 2) return;
  embedding_group_->all_reduce(wte->grad, ReduceOp::Sum);
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
