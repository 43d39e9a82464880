// BpeTokenizer: Hugging Face byte-level BPE tokenizer.json, encode and decode.
#include "pp3d/train/tokenizer.h"

#include <algorithm>
#include <fstream>
#include <sstream>

#include <nlohmann/json.hpp>

#include "pp3d/core/error.h"
#include "pp3d/core/user_error.h"

namespace pp3d {

namespace {

// GPT-2's bytes_to_unicode: printable bytes map to themselves, the others to
// U+0100.. in order, so every byte is one visible code point.
std::vector<uint32_t> byte_to_codepoint() {
  std::vector<uint32_t> map(256, 0);
  uint32_t next = 256;
  for (uint32_t b = 0; b < 256; ++b) {
    const bool printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
    map[b] = printable ? b : next++;
  }
  return map;
}

void append_utf8(std::string& out, uint32_t cp) {
  if (cp < 0x80) {
    out += static_cast<char>(cp);
  } else if (cp < 0x800) {
    out += static_cast<char>(0xC0 | (cp >> 6));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  } else if (cp < 0x10000) {
    out += static_cast<char>(0xE0 | (cp >> 12));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  } else {
    out += static_cast<char>(0xF0 | (cp >> 18));
    out += static_cast<char>(0x80 | ((cp >> 12) & 0x3F));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  }
}

// Code points of UTF-8 `s` with each one's byte length; invalid bytes count as U+FFFD of length 1.
struct CodePoint {
  uint32_t cp;
  int len;
};
std::vector<CodePoint> utf8_codepoints(const std::string& s) {
  std::vector<CodePoint> out;
  for (std::size_t i = 0; i < s.size();) {
    const auto c = static_cast<unsigned char>(s[i]);
    int len = c < 0x80 ? 1 : (c >> 5) == 6 ? 2 : (c >> 4) == 14 ? 3 : (c >> 3) == 30 ? 4 : 0;
    uint32_t cp = len == 1 ? c : len == 2 ? (c & 0x1F) : len == 3 ? (c & 0x0F) : (c & 0x07);
    bool ok = len > 0 && i + static_cast<std::size_t>(len) <= s.size();
    for (int k = 1; ok && k < len; ++k) {
      const auto cc = static_cast<unsigned char>(s[i + static_cast<std::size_t>(k)]);
      ok = (cc >> 6) == 2;
      cp = (cp << 6) | (cc & 0x3F);
    }
    if (!ok) {
      cp = 0xFFFD;
      len = 1;
    }
    out.push_back({cp, len});
    i += static_cast<std::size_t>(len);
  }
  return out;
}

// Unicode classes the GPT-2 regex uses. Exact for ASCII; a table elsewhere (see tokenizer.h).
bool is_space(uint32_t c) {
  return c == ' ' || (c >= 0x09 && c <= 0x0D) || c == 0x85 || c == 0xA0 || c == 0x1680 || (c >= 0x2000 && c <= 0x200A) ||
         c == 0x2028 || c == 0x2029 || c == 0x202F || c == 0x205F || c == 0x3000;
}
bool is_number(uint32_t c) {
  if (c < 0x80) return c >= '0' && c <= '9';
  return c == 0xB2 || c == 0xB3 || c == 0xB9 || (c >= 0xBC && c <= 0xBE) || (c >= 0x660 && c <= 0x669) ||
         (c >= 0x6F0 && c <= 0x6F9) || (c >= 0x966 && c <= 0x96F) || (c >= 0x2070 && c <= 0x2079 && c != 0x2071 &&
         c != 0x2072 && c != 0x2073) || (c >= 0x2080 && c <= 0x2089) || (c >= 0x2150 && c <= 0x2189) ||
         (c >= 0x2460 && c <= 0x249B) || (c >= 0x2776 && c <= 0x2793) || (c >= 0x3007 && c <= 0x3007) ||
         (c >= 0x3021 && c <= 0x3029) || (c >= 0xFF10 && c <= 0xFF19);
}
bool is_letter(uint32_t c) {
  if (c < 0x80) return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
  if (is_space(c) || is_number(c)) return false;
  if (c < 0xC0) return c == 0xAA || c == 0xB5 || c == 0xBA;  // Latin-1 punctuation and symbols, bar ª µ º
  if (c == 0xD7 || c == 0xF7) return false;                   // × ÷
  if (c >= 0x300 && c <= 0x36F) return false;                 // combining marks
  if (c >= 0x2000 && c <= 0x2BFF) return false;               // punctuation, currency, arrows, math, symbols
  if (c >= 0x3000 && c <= 0x303F) return c == 0x3005 || c == 0x3006 || (c >= 0x3031 && c <= 0x3035) || c == 0x303B ||
                                         c == 0x303C;          // CJK punctuation, bar its letters
  if (c >= 0xFE00 && c <= 0xFE0F) return false;               // variation selectors
  if (c >= 0xFF00 && c <= 0xFF20) return false;               // full-width punctuation
  if (c >= 0xFF3B && c <= 0xFF40) return false;
  if (c >= 0xFF5B && c <= 0xFF65) return false;
  if (c >= 0x1F000 && c <= 0x1FAFF) return false;             // emoji and pictographs
  if (c == 0x200D || c == 0xFFFD) return false;
  return true;
}

// Splits `text` by GPT-2's pre-tokenizer regex (see tokenizer.h).
std::vector<std::string> gpt2_pretokenize(const std::string& text) {
  const auto cps = utf8_codepoints(text);
  const std::size_t n = cps.size();
  std::vector<std::size_t> offset(n + 1, 0);
  for (std::size_t i = 0; i < n; ++i) offset[i + 1] = offset[i] + static_cast<std::size_t>(cps[i].len);
  std::vector<std::string> words;
  auto emit = [&](std::size_t a, std::size_t b) { words.push_back(text.substr(offset[a], offset[b] - offset[a])); };
  auto run = [&](std::size_t j, auto pred) {
    while (j < n && pred(cps[j].cp)) ++j;
    return j;
  };
  const auto other = [](uint32_t c) { return !is_space(c) && !is_letter(c) && !is_number(c); };
  std::size_t i = 0;
  while (i < n) {
    const uint32_t c = cps[i].cp;
    // 's 't 're 've 'm 'll 'd
    if (c == '\'' && i + 1 < n) {
      const uint32_t a = cps[i + 1].cp, b = i + 2 < n ? cps[i + 2].cp : 0;
      std::size_t len = 0;
      if (a == 's' || a == 't' || a == 'm' || a == 'd') len = 2;
      else if ((a == 'r' && b == 'e') || (a == 'v' && b == 'e') || (a == 'l' && b == 'l')) len = 3;
      if (len > 0) {
        emit(i, i + len);
        i += len;
        continue;
      }
    }
    const std::size_t s = c == ' ' && i + 1 < n ? i + 1 : i;  // " ?" prefix for the three classes below
    const uint32_t d = cps[s].cp;
    std::size_t end = s;
    if (is_letter(d)) end = run(s, is_letter);
    else if (is_number(d)) end = run(s, is_number);
    else if (other(d)) end = run(s, other);
    if (end > s) {
      emit(i, end);
      i = end;
      continue;
    }
    // \s+(?!\S) then \s+: a whitespace run leaves its last character to the next word.
    const std::size_t ws = run(i, is_space);
    std::size_t stop = ws;
    if (ws < n && ws - i >= 2) stop = ws - 1;
    emit(i, stop);
    i = stop;
  }
  return words;
}

}  // namespace

BpeTokenizer BpeTokenizer::from_file(const std::string& path) {
  std::ifstream in(path);
  PP3D_REQUIRE(in.good(), "tokenizer file '{}' cannot be read", path);
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(in);
  } catch (const nlohmann::json::exception& e) {
    PP3D_REQUIRE(false, "tokenizer file '{}' is not valid JSON: {}", path, e.what());
  }
  const std::string hint = "; give the prompt as --prompt-ids and read the output ids instead";
  PP3D_REQUIRE(j.is_object() && j.contains("model") && j["model"].is_object(), "tokenizer file '{}' has no \"model\" "
               "object (not a Hugging Face tokenizer.json){}", path, hint);
  const auto& model = j["model"];
  const std::string type = model.value("type", "");
  PP3D_REQUIRE(type == "BPE", "tokenizer '{}': model type '{}' is not supported (only byte-level BPE){}", path, type,
               hint);
  const auto& decoder = j.contains("decoder") ? j["decoder"] : nlohmann::json();
  PP3D_REQUIRE(decoder.is_object() && decoder.value("type", "") == "ByteLevel", "tokenizer '{}': decoder {} is not "
               "supported (only ByteLevel){}", path, decoder.is_null() ? "null" : decoder.dump(), hint);
  BpeTokenizer t;
  t.path_ = path;
  try {
    int32_t max_id = -1;
    for (const auto& [tok, id] : model.at("vocab").items()) {
      const auto v = id.get<int32_t>();
      PP3D_REQUIRE(v >= 0, "tokenizer '{}': token '{}' has the negative id {}", path, tok, v);
      t.vocab_[tok] = v;
      max_id = std::max(max_id, v);
    }
    std::vector<std::pair<std::string, int32_t>> added;
    if (j.contains("added_tokens") && j["added_tokens"].is_array()) {
      for (const auto& a : j["added_tokens"]) {
        added.emplace_back(a.at("content").get<std::string>(), a.at("id").get<int32_t>());
        max_id = std::max(max_id, added.back().second);
      }
    }
    t.id_to_token_.assign(static_cast<std::size_t>(max_id + 1), std::string());
    t.special_.assign(static_cast<std::size_t>(max_id + 1), false);
    for (const auto& [tok, id] : t.vocab_) t.id_to_token_[static_cast<std::size_t>(id)] = tok;
    for (const auto& [tok, id] : added) {
      t.id_to_token_[static_cast<std::size_t>(id)] = tok;
      t.special_[static_cast<std::size_t>(id)] = true;
    }
    t.added_ = added;
    std::sort(t.added_.begin(), t.added_.end(),
              [](const auto& a, const auto& b) { return a.first.size() > b.first.size(); });
    int rank = 0;
    for (const auto& m : model.at("merges")) {
      std::pair<std::string, std::string> pair;
      if (m.is_string()) {
        const auto s = m.get<std::string>();
        const auto sp = s.find(' ');
        PP3D_REQUIRE(sp != std::string::npos, "tokenizer '{}': merge {} '{}' is not two tokens", path, rank + 1, s);
        pair = {s.substr(0, sp), s.substr(sp + 1)};
      } else {
        pair = {m.at(0).get<std::string>(), m.at(1).get<std::string>()};
      }
      t.merge_rank_.emplace(std::move(pair), rank++);
    }
  } catch (const nlohmann::json::exception& e) {
    PP3D_REQUIRE(false, "tokenizer '{}' is malformed: {}", path, e.what());
  }
  const auto& pre = j.contains("pre_tokenizer") ? j["pre_tokenizer"] : nlohmann::json();
  const bool normalizer_null = !j.contains("normalizer") || j["normalizer"].is_null();
  t.can_encode_ = normalizer_null && pre.is_object() && pre.value("type", "") == "ByteLevel" &&
                  pre.value("use_regex", true) && !pre.value("add_prefix_space", false);
  return t;
}

int32_t BpeTokenizer::token_id(const std::string& token) const {
  for (const auto& [tok, id] : added_)
    if (tok == token) return id;
  const auto it = vocab_.find(token);
  return it == vocab_.end() ? -1 : it->second;
}

std::vector<int32_t> BpeTokenizer::encode_word(const std::string& bytes) const {
  static const std::vector<uint32_t> to_cp = byte_to_codepoint();
  std::vector<std::string> sym;
  for (const char ch : bytes) {
    std::string s;
    append_utf8(s, to_cp[static_cast<unsigned char>(ch)]);
    sym.push_back(std::move(s));
  }
  // Repeatedly merge the adjacent pair with the lowest rank (leftmost on ties).
  while (sym.size() > 1) {
    int best = -1;
    std::size_t at = 0;
    for (std::size_t k = 0; k + 1 < sym.size(); ++k) {
      const auto it = merge_rank_.find({sym[k], sym[k + 1]});
      if (it != merge_rank_.end() && (best < 0 || it->second < best)) {
        best = it->second;
        at = k;
      }
    }
    if (best < 0) break;
    sym[at] += sym[at + 1];
    sym.erase(sym.begin() + static_cast<std::ptrdiff_t>(at) + 1);
  }
  std::vector<int32_t> ids;
  for (const auto& s : sym) {
    const auto it = vocab_.find(s);
    PP3D_REQUIRE(it != vocab_.end(), "tokenizer '{}': the piece '{}' is not in the vocabulary (is it byte-level?)",
                 path_, s);
    ids.push_back(it->second);
  }
  return ids;
}

std::vector<int32_t> BpeTokenizer::encode(const std::string& text) const {
  PP3D_REQUIRE(can_encode_, "tokenizer '{}' has a normalizer or a pre-tokenizer other than GPT-2's byte-level "
               "regex, which pp3d does not implement; give the prompt as --prompt-ids", path_);
  std::vector<int32_t> ids;
  std::size_t pos = 0;
  auto encode_plain = [&](const std::string& piece) {
    for (const auto& w : gpt2_pretokenize(piece)) {
      const auto word = encode_word(w);
      ids.insert(ids.end(), word.begin(), word.end());
    }
  };
  // Added (special) tokens in the text are matched first, as Hugging Face does.
  while (pos < text.size()) {
    std::size_t best = std::string::npos;
    const std::pair<std::string, int32_t>* hit = nullptr;
    for (const auto& a : added_) {
      const auto f = text.find(a.first, pos);
      if (!a.first.empty() && f != std::string::npos && (f < best || (f == best && hit != nullptr &&
                                                                       a.first.size() > hit->first.size()))) {
        best = f;
        hit = &a;
      }
    }
    if (hit == nullptr) {
      encode_plain(text.substr(pos));
      break;
    }
    encode_plain(text.substr(pos, best - pos));
    ids.push_back(hit->second);
    pos = best + hit->first.size();
  }
  return ids;
}

std::string BpeTokenizer::decode(const std::vector<int32_t>& ids) const {
  static const std::vector<int> from_cp = [] {
    std::vector<int> inv(0x200, -1);
    const auto m = byte_to_codepoint();
    for (int b = 0; b < 256; ++b) inv[m[static_cast<std::size_t>(b)]] = b;
    return inv;
  }();
  std::string out;
  for (const int32_t id : ids) {
    PP3D_REQUIRE(id >= 0 && static_cast<std::size_t>(id) < id_to_token_.size() &&
                 !id_to_token_[static_cast<std::size_t>(id)].empty(),
                 "token id {} is not in the tokenizer '{}' (vocabulary {})", id, path_, id_to_token_.size());
    const std::string& tok = id_to_token_[static_cast<std::size_t>(id)];
    if (special_[static_cast<std::size_t>(id)]) {
      out += tok;
      continue;
    }
    for (const auto& cp : utf8_codepoints(tok)) {
      const int b = cp.cp < from_cp.size() ? from_cp[cp.cp] : -1;
      PP3D_REQUIRE(b >= 0, "tokenizer '{}': token {} '{}' is not byte-level", path_, id, tok);
      out += static_cast<char>(b);
    }
  }
  return out;
}

}  // namespace pp3d
