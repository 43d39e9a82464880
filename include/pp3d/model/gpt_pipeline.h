// GptPipelineStage: a PipelineStage over Gpt chunks — builds this rank's
// chunk(s) of a GPT from a PipelineSplit (balanced or PipelineConfig::split)
// and hands them to the model-agnostic PipelineStage. Tied embeddings: the
// head chunk of a tied model holds its own copy of "wte" (counted_in_norm =
// false) that is declared a shared parameter, so the stage checks it against
// the embedding chunk's copy and sums their gradients over the embedding group.
#pragma once

#include <memory>
#include <vector>

#include "pp3d/model/gpt.h"
#include "pp3d/parallel/pipeline.h"

namespace pp3d {

class ProcessGrid;

class GptPipelineStage : public PipelineStage {
 public:
  // pp_group: the pipeline group (rank = stage); embedding_group: first+last
  // stage group (nullptr on middle stages and allowed when pp == 1 or the
  // embeddings are untied). base_layout supplies the tensor-parallel fields
  // (tp_rank, tp_size, ...); the layer range and has_embedding / has_head are
  // set here. pipe.seq_len 0 means config.max_seq_len. Collective over pp_group.
  GptPipelineStage(const GptConfig& config, Backend& backend, std::shared_ptr<Communicator> pp_group,
                   std::shared_ptr<Communicator> embedding_group, const PipelineConfig& pipe,
                   const GptLayout& base_layout = {}, const GptOptions& options = {});
  // Same, with the groups, tp_rank / tp_size and (when base_layout has none)
  // tp_group taken from the grid; base_layout.sequence_parallel is kept.
  GptPipelineStage(const GptConfig& config, Backend& backend, const ProcessGrid& grid, const PipelineConfig& pipe,
                   const GptLayout& base_layout = {}, const GptOptions& options = {});

  Gpt& chunk(int c) { return static_cast<Gpt&>(module(c)); }
  std::vector<Gpt*> chunks();
};

// The layer split a GptPipelineStage uses for (config, pp, pipe).
PipelineSplit gpt_pipeline_split(const GptConfig& config, int pp, const PipelineConfig& pipe);

}  // namespace pp3d
