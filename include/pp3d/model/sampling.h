// Model-independent parts of text generation: sampling (greedy, temperature,
// top-k, top-p), the autoregressive loop over any incremental decoder, and
// byte-level (de)tokenisation. GPT (pp3d/model/generate.h) and Llama
// (pp3d/model/llama_generate.h) decode with their own KV caches and share
// these. Pure host code; thread-safe (no shared state).
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <string_view>
#include <vector>

#include "pp3d/core/tensor.h"

namespace pp3d {

struct SamplingOptions {
  float temperature = 1.0f;  // 0: greedy (argmax); > 0: softmax(logits / temperature)
  int64_t top_k = 0;         // > 0: sample among the k most likely tokens only (0: all)
  uint64_t seed = 1337;      // token i uses rng_uniform(rng_key(seed, "sample"), i)
  float top_p = 1.0f;        // (0, 1): nucleus sampling, the most likely tokens holding top_p of the mass (1: all)
                             // (last, so existing {temperature, top_k, seed} initialisers keep their meaning)
  // Throws pp3d::Error naming --temperature / --top-k / --top-p when out of range.
  void validate() const;
};

// Picks a token id in [0, vocab) from logits[0, vocab). Greedy (temperature 0,
// or top_k == 1): the largest logit, the lowest id on ties. Otherwise the
// probabilities p = softmax(logits / temperature) (computed in double) are
// restricted to the top_k largest (ties: lower id first), then, when top_p < 1,
// to the smallest prefix of them in decreasing probability (ties: lower id
// first) whose mass reaches top_p of the remaining total, and renormalised; the
// token is the first whose cumulative probability, in increasing id order,
// exceeds u = rng_uniform(rng_key(seed, "sample"), token_index). A pure
// function of its arguments.
int32_t sample_token(const float* logits, int64_t vocab, const SamplingOptions& options, uint64_t token_index);

struct GenerateOptions {
  int64_t max_new_tokens = 64;
  SamplingOptions sampling;
  int32_t stop_token = -1;  // >= 0: stop after emitting this token (it is included)
  // Called with each new token as soon as it is chosen (streaming output).
  std::function<void(int32_t token)> on_token;
};

// Feeds token ids [1, T_new] (host i32) to a decoder that keeps its own cache
// and returns the host f32 logits of the last one, [1, 1, >= vocab].
using DecodeStep = std::function<Tensor(const Tensor& ids)>;

// The generation loop of generate(): checks the options, prefills `prompt`
// (non-empty) with one step() call, then samples new token i (token_index i)
// from the last logits and feeds it back, until max_new_tokens or the stop
// token. The last new token is never fed back. Returns the new tokens only.
std::vector<int32_t> generate_with(const DecodeStep& step, int64_t vocab, const std::vector<int32_t>& prompt,
                                   const GenerateOptions& options);

// Cache positions a generate() needs: prompt + max_new_tokens - 1 (the last
// new token is never fed back). Throws when the prompt is empty,
// max_new_tokens < 0 or the positions exceed `context` tokens; the message
// names `context_limit`, what bounds the context ("learned positions",
// "max_seq_len"), and the flags to change.
int64_t generation_positions(const std::vector<int32_t>& prompt, const GenerateOptions& options, int64_t context,
                             std::string_view context_limit);

// Byte-level tokenisation (vocab 256, pp3d's text data): one token per byte.
std::vector<int32_t> encode_bytes(std::string_view text);
// vocab_size 256: the bytes as text; otherwise the ids separated by spaces.
std::string decode_tokens(const std::vector<int32_t>& tokens, int64_t vocab_size);

}  // namespace pp3d
