#include "pp3d/model/gpt_config.h"

#include <fmt/format.h>

#include "pp3d/comm/communicator.h"
#include "pp3d/core/error.h"

namespace pp3d {

int64_t round_up_vocab(int64_t vocab, int64_t multiple) {
  PP3D_CHECK(multiple > 0, "vocab padding multiple must be positive, got {}", multiple);
  return (vocab + multiple - 1) / multiple * multiple;
}

int64_t GptConfig::padded_vocab() const {
  return padded_vocab_size > 0 ? padded_vocab_size : round_up_vocab(vocab_size, 64);
}

int64_t GptConfig::mlp_hidden() const { return mlp_hidden_size > 0 ? mlp_hidden_size : 4 * hidden_size; }

void GptConfig::validate() const {
  PP3D_CHECK(vocab_size > 0, "GptConfig.vocab_size must be positive, got {}", vocab_size);
  PP3D_CHECK(padded_vocab_size >= 0, "GptConfig.padded_vocab_size must be >= 0 (0 = auto), got {}",
             padded_vocab_size);
  PP3D_CHECK(padded_vocab() >= vocab_size, "GptConfig.padded_vocab_size {} is smaller than vocab_size {}",
             padded_vocab_size, vocab_size);
  PP3D_CHECK(max_seq_len > 0, "GptConfig.max_seq_len must be positive, got {}", max_seq_len);
  PP3D_CHECK(num_layers > 0, "GptConfig.num_layers must be positive, got {}", num_layers);
  PP3D_CHECK(num_heads > 0, "GptConfig.num_heads must be positive, got {}", num_heads);
  PP3D_CHECK(hidden_size > 0, "GptConfig.hidden_size must be positive, got {}", hidden_size);
  PP3D_CHECK(hidden_size % num_heads == 0,
             "GptConfig.hidden_size {} is not divisible by num_heads {} (head size must be an integer)",
             hidden_size, num_heads);
  PP3D_CHECK(mlp_hidden_size >= 0, "GptConfig.mlp_hidden_size must be >= 0 (0 = 4*hidden), got {}",
             mlp_hidden_size);
  PP3D_CHECK(num_kv_heads >= 0 && (num_kv_heads == 0 || is_llama()),
             "GptConfig.num_kv_heads {} is for arch llama only (must be 0 for gpt2)", num_kv_heads);
  PP3D_CHECK(num_heads % kv_heads() == 0, "GptConfig.num_kv_heads {} must divide num_heads {}", num_kv_heads,
             num_heads);
  PP3D_CHECK(ln_eps > 0.0f, "GptConfig.ln_eps must be positive, got {}", ln_eps);
  PP3D_CHECK(init_std >= 0.0f && wpe_init_std >= 0.0f, "GptConfig init stds must be >= 0 (got {}, {})", init_std,
             wpe_init_std);
}

int64_t GptConfig::num_parameters() const {
  const int64_t C = hidden_size, F = mlp_hidden(), V = padded_vocab();
  if (is_llama()) {
    const int64_t Ckv = kv_heads() * head_dim();
    const int64_t per_layer = 2 * C                      // input_layernorm, post_attention_layernorm
                              + 2 * C * C + 2 * C * Ckv  // q, o; k, v
                              + 3 * C * F;               // gate, up, down
    return V * C + num_layers * per_layer + C + (tied_embeddings ? 0 : V * C);  // embed, layers, norm, lm_head
  }
  const int64_t per_layer = 2 * C                 // ln_1
                            + 3 * C * C + 3 * C   // c_attn
                            + C * C + C           // attn.c_proj
                            + 2 * C               // ln_2
                            + F * C + F           // c_fc
                            + C * F + C;          // mlp.c_proj
  int64_t n = V * C + max_seq_len * C + num_layers * per_layer + 2 * C;
  if (!tied_embeddings) n += V * C;
  return n;
}

GptConfig GptConfig::resolved() const {
  GptConfig c = *this;
  c.padded_vocab_size = padded_vocab();
  c.mlp_hidden_size = mlp_hidden();
  return c;
}

std::string GptConfig::str() const {
  if (is_llama())
    return fmt::format("llama L{} H{}/{} C{} F{} V{}({}) T{}", num_layers, num_heads, kv_heads(), hidden_size,
                       mlp_hidden(), vocab_size, padded_vocab(), max_seq_len);
  return fmt::format("L{} H{} C{} V{}({}) T{}", num_layers, num_heads, hidden_size, vocab_size, padded_vocab(),
                     max_seq_len);
}

void GptLayout::validate(const GptConfig& cfg) const {
  PP3D_CHECK(tp_size >= 1, "GptLayout.tp_size must be >= 1, got {}", tp_size);
  PP3D_CHECK(tp_rank >= 0 && tp_rank < tp_size, "GptLayout.tp_rank {} out of range for tp_size {}", tp_rank,
             tp_size);
  if (tp_group) {
    PP3D_CHECK(tp_group->size() == tp_size, "GptLayout.tp_group '{}' has {} ranks but tp_size is {}",
               tp_group->name(), tp_group->size(), tp_size);
    PP3D_CHECK(tp_group->rank() == tp_rank, "GptLayout.tp_rank {} differs from the rank {} in tp_group '{}'",
               tp_rank, tp_group->rank(), tp_group->name());
  }
  const int64_t end = end_layer(cfg);
  PP3D_CHECK(first_layer >= 0 && first_layer <= end && end <= cfg.num_layers,
             "GptLayout layers [{}, {}) do not fit a model of {} layers", first_layer, end, cfg.num_layers);
  PP3D_CHECK(end > first_layer || has_embedding || has_head,
             "GptLayout holds nothing (no layers, no embedding, no head)");
  PP3D_CHECK(!has_embedding || first_layer == 0,
             "GptLayout: the embedding stage must start at layer 0, got first_layer {}", first_layer);
  PP3D_CHECK(!has_head || end == cfg.num_layers,
             "GptLayout: the head stage must end at the last layer {}, got last_layer {}", cfg.num_layers, end);
  PP3D_CHECK(cfg.num_heads % tp_size == 0, "num_heads {} is not divisible by tp_size {}", cfg.num_heads,
             tp_size);
  PP3D_CHECK(cfg.mlp_hidden() % tp_size == 0, "mlp_hidden_size {} is not divisible by tp_size {}",
             cfg.mlp_hidden(), tp_size);
  PP3D_CHECK(cfg.padded_vocab() % tp_size == 0,
             "padded_vocab_size {} is not divisible by tp_size {} (pad the vocabulary to a multiple of tp)",
             cfg.padded_vocab(), tp_size);
}

}  // namespace pp3d
