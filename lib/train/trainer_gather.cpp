// Trainer::gather_full_parameters: the whole model's tensors on global rank 0
// (TP shards all-gathered and placed by their ShardSpec, pipeline stages sent
// to pipeline rank 0 of the (tp 0, dp 0) pipeline; ZeRO-3 shards gathered first)
// and the --export-safetensors writer built on it (GPT-2 or Hugging Face Llama names).
#include <algorithm>
#include <cstring>

#include <nlohmann/json.hpp>

#include "pp3d/core/error.h"
#include "pp3d/core/log.h"
#include "pp3d/model/arch_config.h"
#include "pp3d/model/llama_hf.h"
#include "pp3d/parallel/pipeline.h"
#include "pp3d/parallel/process_grid.h"
#include "pp3d/parallel/zero_optimizer.h"
#include "pp3d/train/interop.h"
#include "pp3d/train/trainer.h"

namespace pp3d {

namespace {

// Host f32 copy of a parameter's full tensor: all-gathers the TP shards over `tp`.
Tensor tp_full(const Parameter& p, Communicator& tp) {
  const Tensor local = Tensor::from_vector(p.value.shape(), p.value.to_vector());
  if (!p.shard.sharded() || tp.size() == 1) return local;
  const int n = tp.size();
  const int64_t numel = local.numel();
  Tensor all = Tensor::zeros({n * numel});
  tp.all_gather(local, all);
  Tensor full = Tensor::zeros(p.global_shape);
  const Shape ls = local.shape();
  const int64_t grows = p.global_shape[0], gcols = p.global_shape.size() == 2 ? p.global_shape[1] : 1;
  const int64_t lrows = ls[0], lcols = ls.size() == 2 ? ls[1] : 1;
  const float* src = all.data<float>();
  float* dst = full.data<float>();
  for (int r = 0; r < n; ++r) {
    const int64_t off = r * p.shard.length;  // rank r holds [off, off + length) of every segment
    auto to_global = [&](int64_t l, int64_t extent) {
      return (l / p.shard.length) * (extent / p.shard.segments) + off + l % p.shard.length;
    };
    for (int64_t i = 0; i < lrows; ++i) {
      const int64_t gi = p.shard.dim == 0 ? to_global(i, grows) : i;
      for (int64_t j = 0; j < lcols; ++j) {
        const int64_t gj = p.shard.dim == 1 ? to_global(j, gcols) : j;
        dst[gi * gcols + gj] = src[r * numel + i * lcols + j];
      }
    }
  }
  return full;
}

Parameter full_parameter(const Parameter& like, Tensor value) {
  Parameter q;
  q.name = like.name;
  q.global_shape = value.shape();
  q.value = std::move(value);
  q.init = like.init;
  q.weight_decay = like.weight_decay;
  q.layer = like.layer;
  return q;
}

}  // namespace

std::vector<Parameter> Trainer::gather_full_parameters() {
  const bool stage3 = zero_->stage() == 3;
  if (stage3) zero_->gather_parameters();
  std::vector<Parameter> mine;
  for (int c = 0; c < stage_->num_chunks(); ++c) {
    Module& m = stage_->module(c);
    // A chunk without the embedding (virtual stage 0) holds shared parameters as copies: the head's tied copy.
    const bool copies = !(c == 0 && grid_->pp_rank() == 0);
    const std::vector<Parameter*> shared = m.shared_parameters();
    for (Parameter* p : m.parameters()) {
      if (copies && std::find(shared.begin(), shared.end(), p) != shared.end()) continue;
      mine.push_back(full_parameter(*p, tp_full(*p, *grid_->tp_group())));
    }
  }
  if (stage3) zero_->release_parameters();
  if (grid_->tp_rank() != 0 || grid_->dp_rank() != 0) return {};
  Communicator& pg = *grid_->pp_group();
  if (pg.rank() != 0) {
    nlohmann::json head = nlohmann::json::array();
    int64_t total = 0;
    for (const Parameter& p : mine) {
      head.push_back({{"name", p.name}, {"shape", p.value.shape()}, {"layer", p.layer}, {"wd", p.weight_decay}});
      total += p.value.numel();
    }
    const std::string text = head.dump();
    std::vector<int32_t> bytes((text.size() + 3) / 4, 0);
    std::memcpy(bytes.data(), text.data(), text.size());
    Tensor sizes = Tensor::from_vector_i32({2}, {static_cast<int32_t>(text.size()), static_cast<int32_t>(total)});
    pg.send(sizes, 0, 1);
    pg.send(Tensor::from_vector_i32({static_cast<int64_t>(bytes.size())}, bytes), 0, 2);
    Tensor blob = Tensor::zeros({std::max<int64_t>(total, 1)});
    int64_t off = 0;
    for (const Parameter& p : mine) {
      std::memcpy(blob.data<float>() + off, p.value.data<float>(), static_cast<std::size_t>(p.value.numel()) * 4);
      off += p.value.numel();
    }
    pg.send(blob, 0, 3);
    return {};
  }
  for (int r = 1; r < pg.size(); ++r) {
    Tensor sizes = Tensor::zeros({2}, DType::I32);
    pg.recv(sizes, r, 1);
    const int32_t nbytes = sizes.data<int32_t>()[0];
    const int64_t total = sizes.data<int32_t>()[1];
    Tensor words = Tensor::zeros({(nbytes + 3) / 4}, DType::I32);
    pg.recv(words, r, 2);
    const auto head = nlohmann::json::parse(std::string(static_cast<const char*>(words.raw()), nbytes));
    Tensor blob = Tensor::zeros({std::max<int64_t>(total, 1)});
    pg.recv(blob, r, 3);
    int64_t off = 0;
    for (const auto& e : head) {
      Parameter like;
      like.name = e.at("name").get<std::string>();
      like.layer = e.at("layer").get<int64_t>();
      like.weight_decay = e.at("wd").get<bool>();
      const Shape shape = e.at("shape").get<Shape>();
      const int64_t n = shape_numel(shape);
      mine.push_back(full_parameter(like, blob.slice(off, off + n).clone().reshape(shape)));
      off += n;
    }
  }
  return mine;
}

void Trainer::export_weights(const std::string& path) {
  std::vector<Parameter> full = gather_full_parameters();
  if (world_->rank() != 0) return;
  std::vector<Parameter*> ptrs;
  for (Parameter& p : full) ptrs.push_back(&p);
  if (model_config_.is_llama()) {
    save_llama_hf(path, to_llama_config(model_config_), ptrs);  // + config.json
  } else {
    export_safetensors(path, model_config_, ptrs);
  }
  if (cfg_.quiet) return;
  if (model_config_.is_llama()) {
    logger()->info("exported {}/model.safetensors + config.json (Hugging Face Llama)", path);
  } else {
    logger()->info("exported safetensors to '{}'", path);
  }
}

}  // namespace pp3d
