// The generation loop of a GPT over its KvCache (generate.h); sampling and
// the loop itself are model independent (sampling.cpp).
#include "pp3d/model/generate.h"

namespace pp3d {

std::vector<int32_t> generate(Gpt& model, const std::vector<int32_t>& prompt, const GenerateOptions& o) {
  o.sampling.validate();
  const GptConfig& cfg = model.config();
  const int64_t needed = generation_positions(prompt, o, cfg.max_seq_len, "learned positions");
  if (o.max_new_tokens == 0) return {};
  KvCache cache(model, 1, needed);
  return generate_with([&](const Tensor& ids) { return forward_decode(model, ids, cache); }, cfg.vocab_size, prompt,
                       o);
}

}  // namespace pp3d
