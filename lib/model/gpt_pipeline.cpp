// GptPipelineStage: builds a rank's Gpt chunks for the model-agnostic PipelineStage.
#include "pp3d/model/gpt_pipeline.h"

#include "pp3d/core/error.h"
#include "pp3d/parallel/process_grid.h"

namespace pp3d {

namespace {

GptLayout grid_layout(const ProcessGrid& grid, GptLayout base) {
  base.tp_rank = grid.tp_rank();
  base.tp_size = grid.tp();
  if (base.tp_group == nullptr && grid.tp() > 1) base.tp_group = grid.tp_group();
  return base;
}

Communicator& pp_of(const std::shared_ptr<Communicator>& pp_group) {
  PP3D_CHECK(pp_group != nullptr, "PipelineStage needs a pipeline-parallel communicator");
  return *pp_group;
}

PipelineConfig resolved(const GptConfig& config, PipelineConfig pipe) {
  const GptConfig cfg = config.resolved();
  if (pipe.seq_len <= 0) pipe.seq_len = cfg.max_seq_len;
  PP3D_CHECK(pipe.seq_len <= cfg.max_seq_len, "PipelineConfig.seq_len {} exceeds the model's max_seq_len {}",
             pipe.seq_len, cfg.max_seq_len);
  return pipe;
}

std::vector<std::unique_ptr<Module>> build_chunks(const GptConfig& config, Backend& backend, int pp_rank, int pp,
                                                  const PipelineConfig& pipe, const GptLayout& base_layout,
                                                  const GptOptions& options) {
  PP3D_CHECK(pipe.virtual_stages >= 1, "PipelineConfig.virtual_stages must be >= 1, got {}", pipe.virtual_stages);
  const PipelineSplit split = gpt_pipeline_split(config, pp, pipe);
  const int S = split.num_stages();
  std::vector<std::unique_ptr<Module>> chunks;
  for (int c = 0; c < pipe.virtual_stages; ++c) {
    const int s = split.stage_of(pp_rank, c);
    GptLayout l = base_layout;
    l.first_layer = split.first_layer(s);
    l.last_layer = split.end_layer(s);
    l.has_embedding = s == 0;
    l.has_head = s == S - 1;
    chunks.push_back(std::make_unique<Gpt>(config, backend, l, options));
  }
  return chunks;
}

}  // namespace

PipelineSplit gpt_pipeline_split(const GptConfig& config, int pp, const PipelineConfig& pipe) {
  return PipelineSplit::parse(pipe.split, config.resolved().num_layers, pp, pipe.virtual_stages);
}

GptPipelineStage::GptPipelineStage(const GptConfig& config, Backend& backend, std::shared_ptr<Communicator> pp_group,
                                   std::shared_ptr<Communicator> embedding_group, const PipelineConfig& pipe,
                                   const GptLayout& base_layout, const GptOptions& options)
    : PipelineStage(build_chunks(config, backend, pp_of(pp_group).rank(), pp_of(pp_group).size(), pipe,
                                 base_layout, options),
                    pp_group, std::move(embedding_group), resolved(config, pipe),
                    gpt_pipeline_split(config, pp_of(pp_group).size(), pipe)) {}

GptPipelineStage::GptPipelineStage(const GptConfig& config, Backend& backend, const ProcessGrid& grid,
                                   const PipelineConfig& pipe, const GptLayout& base_layout,
                                   const GptOptions& options)
    : PipelineStage(build_chunks(config, backend, grid.pp_rank(), grid.pp(), pipe, grid_layout(grid, base_layout),
                                 options),
                    grid.pp_group(), grid.embedding_group(), resolved(config, pipe),
                    gpt_pipeline_split(config, grid.pp(), pipe)) {}

std::vector<Gpt*> GptPipelineStage::chunks() {
  std::vector<Gpt*> out;
  for (int c = 0; c < num_chunks(); ++c) out.push_back(&chunk(c));
  return out;
}

}  // namespace pp3d
