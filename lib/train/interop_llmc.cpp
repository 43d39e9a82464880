// llm.c GPT-2 checkpoints (magic 20240326, version 3 = fp32): read a shard's
// slices, write whole models.
#include <array>
#include <fstream>
#include <string>
#include <vector>

#include "pp3d/core/error.h"
#include "pp3d/train/interop.h"
#include "train/interop_internal.h"

namespace pp3d {

namespace {

constexpr int64_t kHeaderInts = 256;
constexpr int64_t kHeaderBytes = kHeaderInts * 4;

struct LlmcHeader {
  int64_t maxT, V, L, NH, C, Vp;
};

// One tensor in the file, viewed as [rows, cols] (1-D tensors: one row).
struct FileTensor {
  std::string name;
  int64_t offset;  // in floats from the end of the header
  int64_t rows, cols;
};

// Every tensor of an llm.c checkpoint, in file order, under pp3d's names.
std::vector<FileTensor> llmc_index(const LlmcHeader& h) {
  const int64_t C = h.C, L = h.L;
  std::vector<FileTensor> out;
  int64_t off = 0;
  auto add = [&](std::string name, int64_t rows, int64_t cols) {
    out.push_back({std::move(name), off, rows, cols});
    off += rows * cols;
  };
  add("wte", h.Vp, C);
  add("wpe", h.maxT, C);
  const std::array<std::tuple<const char*, int64_t, int64_t>, 12> kinds = {{
      {"ln_1.weight", 1, C}, {"ln_1.bias", 1, C}, {"attn.c_attn.weight", 3 * C, C}, {"attn.c_attn.bias", 1, 3 * C},
      {"attn.c_proj.weight", C, C}, {"attn.c_proj.bias", 1, C}, {"ln_2.weight", 1, C}, {"ln_2.bias", 1, C},
      {"mlp.c_fc.weight", 4 * C, C}, {"mlp.c_fc.bias", 1, 4 * C}, {"mlp.c_proj.weight", C, 4 * C},
      {"mlp.c_proj.bias", 1, C}}};
  for (const auto& [suffix, rows, cols] : kinds) {
    for (int64_t l = 0; l < L; ++l) add("h." + std::to_string(l) + "." + suffix, rows, cols);
  }
  add("ln_f.weight", 1, C);
  add("ln_f.bias", 1, C);
  return out;
}

int64_t total_floats(const std::vector<FileTensor>& idx) { return idx.back().offset + idx.back().rows * idx.back().cols; }

LlmcHeader read_header(const std::string& path, std::ifstream& in) {
  PP3D_CHECK(in.good(), "cannot open llm.c checkpoint '{}' for reading", path);
  std::array<int32_t, kHeaderInts> hd{};
  in.read(reinterpret_cast<char*>(hd.data()), kHeaderBytes);
  PP3D_CHECK(in.gcount() == kHeaderBytes, "llm.c checkpoint '{}' is truncated: {} bytes, the header needs {}", path,
             in.gcount(), kHeaderBytes);
  PP3D_CHECK(hd[0] == kLlmcModelMagic, "'{}' is not an llm.c GPT-2 checkpoint: magic at byte offset 0 is {}, "
             "expected {}", path, hd[0], kLlmcModelMagic);
  PP3D_CHECK(hd[1] == kLlmcModelVersionF32, "llm.c checkpoint '{}' has version {} at byte offset 4; only version {} "
             "(fp32, e.g. gpt2_124M.bin) is supported, not bf16 (version 5)", path, hd[1], kLlmcModelVersionF32);
  const LlmcHeader h{hd[2], hd[3], hd[4], hd[5], hd[6], hd[7]};
  PP3D_CHECK(h.maxT > 0 && h.V > 0 && h.L > 0 && h.NH > 0 && h.C > 0 && h.Vp >= h.V && h.C % h.NH == 0,
             "llm.c checkpoint '{}' has an invalid header: maxT {} V {} L {} NH {} C {} Vp {}", path, h.maxT, h.V,
             h.L, h.NH, h.C, h.Vp);
  in.seekg(0, std::ios::end);
  const auto file_bytes = static_cast<int64_t>(in.tellg());
  const int64_t need = kHeaderBytes + 4 * total_floats(llmc_index(h));
  PP3D_CHECK(file_bytes >= need, "llm.c checkpoint '{}' is truncated: the header describes {} bytes, the file ends "
             "at byte offset {}", path, need, file_bytes);
  return h;
}

GptConfig header_config(const LlmcHeader& h) {
  GptConfig c;
  c.vocab_size = h.V;
  c.padded_vocab_size = h.Vp;
  c.max_seq_len = h.maxT;
  c.num_layers = h.L;
  c.num_heads = h.NH;
  c.hidden_size = h.C;
  c.mlp_hidden_size = 4 * h.C;
  c.tied_embeddings = true;
  return c;
}

// Local index along a sharded extent -> global index (segments of spec.length).
int64_t to_global(int64_t l, int64_t extent, const ShardSpec& s) {
  const int64_t seg_len = extent / s.segments;
  return (l / s.length) * seg_len + s.offset + l % s.length;
}

// Reads p's slice of file tensor `ft`. Global rows >= valid_rows become 0.
void load_slice(std::ifstream& in, const std::string& path, const FileTensor& ft, int64_t valid_rows, Parameter& p) {
  const Shape& g = p.global_shape;
  const bool one_d = g.size() == 1;
  const int64_t grows = one_d ? 1 : g[0], gcols = g.back();
  // In the [rows, cols] view a 1-D tensor's dim 0 is the column dim.
  const int shard_dim = !p.shard.sharded() ? -1 : (one_d ? 1 : p.shard.dim);
  const Shape local = p.value.shape();
  const int64_t lrows = one_d ? 1 : local[0], lcols = local.back();
  PP3D_CHECK(gcols == ft.cols, "parameter '{}' has global shape {}, the llm.c file holds [{}, {}] for it", p.name,
             shape_str(g), ft.rows, ft.cols);
  // Column runs: (local col, global col, length).
  std::vector<std::array<int64_t, 3>> runs;
  if (shard_dim == 1) {
    for (int64_t s = 0; s < p.shard.segments; ++s)
      runs.push_back({s * p.shard.length, s * (gcols / p.shard.segments) + p.shard.offset, p.shard.length});
  } else {
    runs.push_back({0, 0, gcols});
  }
  std::vector<float> buf(static_cast<std::size_t>(lrows * lcols), 0.0f);
  for (int64_t r = 0; r < lrows; ++r) {
    const int64_t gr = shard_dim == 0 ? to_global(r, grows, p.shard) : r;
    if (gr >= valid_rows) continue;  // padding rows stay 0
    for (const auto& [lc, gc, len] : runs) {
      in.seekg(kHeaderBytes + 4 * (ft.offset + gr * ft.cols + gc));
      in.read(reinterpret_cast<char*>(buf.data() + r * lcols + lc), 4 * len);
      PP3D_CHECK(in.good(), "read error in llm.c checkpoint '{}' at byte offset {} (tensor '{}')", path,
                 kHeaderBytes + 4 * (ft.offset + gr * ft.cols + gc), p.name);
    }
  }
  detail::set_host_values(p, buf);
}

}  // namespace

GptConfig read_llmc_config(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return header_config(read_header(path, in));
}

void load_llmc_checkpoint(const std::string& path, const GptConfig& config, const std::vector<Parameter*>& params) {
  std::ifstream in(path, std::ios::binary);
  const LlmcHeader h = read_header(path, in);
  const GptConfig cfg = config.resolved();
  PP3D_CHECK(cfg.num_layers == h.L && cfg.num_heads == h.NH && cfg.hidden_size == h.C && cfg.vocab_size == h.V &&
                 cfg.mlp_hidden() == 4 * h.C,
             "llm.c checkpoint '{}' holds a model L{} H{} C{} V{} (MLP {}), but the model is {} (MLP {}); use the "
             "checkpoint's shape", path, h.L, h.NH, h.C, h.V, 4 * h.C, cfg.str(), cfg.mlp_hidden());
  PP3D_CHECK(cfg.max_seq_len <= h.maxT, "model max_seq_len {} exceeds the checkpoint's {} ('{}')", cfg.max_seq_len,
             h.maxT, path);
  const auto idx = llmc_index(h);
  for (Parameter* p : params) {
    const std::string& name = p->name == "lm_head.weight" ? std::string("wte") : p->name;
    const FileTensor* ft = nullptr;
    for (const auto& t : idx)
      if (t.name == name) ft = &t;
    PP3D_CHECK(ft != nullptr, "parameter '{}' has no counterpart in the llm.c format ('{}')", p->name, path);
    const int64_t grows = p->global_shape.size() == 1 ? 1 : p->global_shape[0];
    if (name != "wte") {
      PP3D_CHECK(name == "wpe" ? grows <= ft->rows : grows == ft->rows,
                 "parameter '{}' has global shape {}, the llm.c file holds [{}, {}]", p->name,
                 shape_str(p->global_shape), ft->rows, ft->cols);
    }
    load_slice(in, path, *ft, ft->rows, *p);  // wte rows past the file's Vp stay 0
  }
}

void save_llmc_checkpoint(const std::string& path, const GptConfig& config, const std::vector<Parameter*>& params) {
  const GptConfig cfg = config.resolved();
  PP3D_CHECK(cfg.tied_embeddings, "the llm.c format has no separate lm_head: save a model with tied embeddings");
  PP3D_CHECK(cfg.mlp_hidden() == 4 * cfg.hidden_size, "the llm.c format needs MLP width 4 * hidden ({}), got {}",
             4 * cfg.hidden_size, cfg.mlp_hidden());
  const LlmcHeader h{cfg.max_seq_len, cfg.vocab_size, cfg.num_layers, cfg.num_heads, cfg.hidden_size,
                     cfg.padded_vocab()};
  std::array<int32_t, kHeaderInts> hd{};
  hd[0] = kLlmcModelMagic;
  hd[1] = kLlmcModelVersionF32;
  const int64_t vals[6] = {h.maxT, h.V, h.L, h.NH, h.C, h.Vp};
  for (int i = 0; i < 6; ++i) hd[2 + i] = static_cast<int32_t>(vals[i]);
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  PP3D_CHECK(out.good(), "cannot open '{}' for writing", path);
  out.write(reinterpret_cast<const char*>(hd.data()), kHeaderBytes);
  for (const auto& ft : llmc_index(h)) {
    const Parameter* p = nullptr;
    for (const Parameter* q : params)
      if (q->name == ft.name) p = q;
    PP3D_CHECK(p != nullptr, "save_llmc_checkpoint: parameter '{}' missing (save needs the whole model)", ft.name);
    detail::check_unsharded(*p, "save_llmc_checkpoint");
    PP3D_CHECK(p->global_numel() == ft.rows * ft.cols, "parameter '{}' has shape {}, expected [{}, {}]", p->name,
               shape_str(p->global_shape), ft.rows, ft.cols);
    const auto v = detail::host_values(*p);
    out.write(reinterpret_cast<const char*>(v.data()), static_cast<std::streamsize>(4 * v.size()));
  }
  PP3D_CHECK(out.good(), "write error on '{}'", path);
}

}  // namespace pp3d
