// Interoperability with llm.c and Hugging Face: llm.c GPT-2 checkpoints
// (gpt2_124M.bin: 256 int32 header, magic 20240326, version 3 = fp32, then
// every tensor in llm.c order) and safetensors export with GPT-2 tensor names.
//
// The functions work on a list of Parameters (a Gpt's parameters()) whose
// names and global shapes follow pp3d's GPT ("wte", "h.3.attn.c_attn.weight",
// ...). Loading reads, for every parameter, exactly the slice its ShardSpec
// describes, so a tensor-/pipeline-parallel shard loads only what it holds.
// Saving and exporting need the full, unsharded tensors. Parameter values may
// live on any device and in any float dtype. Functions are independent (no
// shared state); callers serialise access to the Parameters.
#pragma once

#include <string>
#include <vector>

#include "pp3d/model/gpt_config.h"
#include "pp3d/core/parameter.h"

namespace pp3d {

constexpr int32_t kLlmcModelMagic = 20240326;
constexpr int32_t kLlmcModelVersionF32 = 3;

// Model shape stored in an llm.c checkpoint header: vocab_size = V,
// padded_vocab_size = Vp, max_seq_len = maxT, num_layers = L, num_heads = NH,
// hidden_size = C (tied embeddings, MLP 4C). Throws pp3d::Error on a file that
// is missing, truncated, not an llm.c model (magic) or not fp32 (version).
GptConfig read_llmc_config(const std::string& path);

// Loads `params` from the checkpoint at `path`. `config` is the model's: its
// layers, heads, hidden size and vocabulary must equal the file's; its
// max_seq_len may be smaller (the first positions of wpe are read); its padded
// vocabulary may differ (wte rows past the file's padded vocabulary are set to 0). An untied
// "lm_head.weight" is loaded from wte. Parameters not in the llm.c format
// throw.
void load_llmc_checkpoint(const std::string& path, const GptConfig& config, const std::vector<Parameter*>& params);

// Writes an llm.c fp32 checkpoint of a whole, unsharded model with tied
// embeddings and MLP width 4C (every tensor must be present in `params`).
void save_llmc_checkpoint(const std::string& path, const GptConfig& config, const std::vector<Parameter*>& params);

// Writes a safetensors file with Hugging Face GPT-2 names and layouts:
// wte.weight [V, C] (padding rows dropped), wpe.weight [maxT, C],
// h.{i}.ln_1.{weight,bias}, h.{i}.attn.c_attn.{weight [C, 3C], bias},
// h.{i}.attn.c_proj.{weight [C, C], bias}, h.{i}.ln_2.*, h.{i}.mlp.c_fc.{weight
// [C, 4C], bias}, h.{i}.mlp.c_proj.{weight [4C, C], bias}, ln_f.{weight,bias}
// (+ lm_head.weight [V, C] when untied). Conv1D weights are transposed from
// pp3d's [out, in] to HF's [in, out]. All F32; header metadata
// {"format": "pt", "producer": "pp3d"}. Needs whole, unsharded parameters.
void export_safetensors(const std::string& path, const GptConfig& config, const std::vector<Parameter*>& params);

}  // namespace pp3d
