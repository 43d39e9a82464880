// The generation loop of a GPT over its KvCache (generate.h); sampling and
// the loop itself are model independent (sampling.cpp).
#include <algorithm>

#include "pp3d/core/error.h"
#include "pp3d/model/generate.h"

namespace pp3d {

std::vector<int32_t> generate(Gpt& model, const std::vector<int32_t>& prompt, const GenerateOptions& o) {
  o.sampling.validate();
  const GptConfig& cfg = model.config();
  PP3D_CHECK(!prompt.empty(), "generate: the prompt must hold at least one token");
  PP3D_CHECK(o.max_new_tokens >= 0, "--max-new-tokens must be >= 0, got {}", o.max_new_tokens);
  const auto P = static_cast<int64_t>(prompt.size());
  // The last new token is never fed back, so P + max_new - 1 positions are needed.
  const int64_t needed = P + std::max<int64_t>(o.max_new_tokens - 1, 0);
  PP3D_CHECK(needed <= cfg.max_seq_len,
             "the prompt ({} tokens) + --max-new-tokens {} needs {} positions but the model's context is {} tokens "
             "(learned positions); shorten the prompt or lower --max-new-tokens",
             P, o.max_new_tokens, needed, cfg.max_seq_len);
  if (o.max_new_tokens == 0) return {};
  KvCache cache(model, 1, needed);
  return generate_with([&](const Tensor& ids) { return forward_decode(model, ids, cache); }, cfg.vocab_size, prompt,
                       o);
}

}  // namespace pp3d
