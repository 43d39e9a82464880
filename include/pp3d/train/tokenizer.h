// Byte-level BPE tokenizers read from a Hugging Face `tokenizer.json` (the
// format tools/prepare_data writes with --train-bpe and GPT-2's tokenizer uses),
// so that pp3d-generate encodes prompts and decodes samples with the tokenizer a
// run was trained on.
//
// Supported: model "BPE" over the byte-level alphabet (GPT-2's bytes-to-unicode
// map), merges as "a b" strings or ["a", "b"] pairs, added/special tokens.
//   decode: any such file whose decoder is "ByteLevel" (GPT-2, Llama 3, trained BPEs).
//   encode: additionally needs the plain GPT-2 pre-tokenizer ("ByteLevel" with
//     use_regex, no normalizer). Its regex ('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+|
//     ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+) is evaluated by hand: exact for ASCII; other
//     code points are classified by a small table (whitespace, digits, common
//     punctuation and symbol blocks; everything else counts as a letter), which
//     matches Unicode for Latin, Greek, Cyrillic, CJK and emoji text (see
//     tests/data/tokenizer) but may split rare scripts' punctuation differently.
// Anything else (SentencePiece/Metaspace files, other pre-tokenizers) is a
// pp3d::UserError that says to pass token ids instead.
// Immutable after loading; thread-safe for concurrent encode/decode.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

namespace pp3d {

class BpeTokenizer {
 public:
  // Reads and checks `path`; errors name the file and what is unsupported.
  static BpeTokenizer from_file(const std::string& path);

  bool can_encode() const { return can_encode_; }
  // Token ids of `text` (throws a UserError when !can_encode()).
  std::vector<int32_t> encode(const std::string& text) const;
  // The UTF-8 bytes of `ids` (special tokens as their text). An id outside the
  // vocabulary is an error naming it.
  std::string decode(const std::vector<int32_t>& ids) const;
  int64_t vocab_size() const { return static_cast<int64_t>(id_to_token_.size()); }
  // The id of `token` (e.g. "<|endoftext|>"), or -1.
  int32_t token_id(const std::string& token) const;
  const std::string& path() const { return path_; }

 private:
  std::vector<int32_t> encode_word(const std::string& bytes) const;

  std::string path_;
  bool can_encode_ = false;
  std::unordered_map<std::string, int32_t> vocab_;         // byte-level token string -> id
  std::vector<std::string> id_to_token_;                   // id -> token string ("" = unused id)
  std::vector<bool> special_;                              // id -> an added token (decoded as its text)
  std::map<std::pair<std::string, std::string>, int> merge_rank_;
  std::vector<std::pair<std::string, int32_t>> added_;     // added tokens, longest first
};

}  // namespace pp3d
