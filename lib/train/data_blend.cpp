// --data: weighted blends of datasets, given as Megatron's "W1 PATH1 W2 PATH2"
// string or as a YAML blend file.
#include <cmath>
#include <filesystem>
#include <iterator>
#include <sstream>

#include <yaml-cpp/yaml.h>

#include "pp3d/core/error.h"
#include "pp3d/core/user_error.h"
#include "pp3d/train/data.h"

namespace pp3d {

namespace fs = std::filesystem;

std::vector<std::pair<double, std::string>> parse_blend_spec(const std::string& spec) {
  std::istringstream in(spec);
  std::vector<std::string> words{std::istream_iterator<std::string>(in), std::istream_iterator<std::string>()};
  if (words.size() < 2) return {};
  auto number = [](const std::string& w, double& v) {
    char* end = nullptr;
    v = std::strtod(w.c_str(), &end);
    return end != w.c_str() && *end == '\0';
  };
  double first = 0.0;
  if (!number(words[0], first)) return {};  // a path with spaces
  PP3D_REQUIRE(words.size() % 2 == 0, "--data '{}': a blend is pairs 'WEIGHT PATH WEIGHT PATH ...' (Megatron's "
             "form), but it has {} words", spec, words.size());
  std::vector<std::pair<double, std::string>> parts;
  for (std::size_t i = 0; i < words.size(); i += 2) {
    double w = 0.0;
    PP3D_REQUIRE(number(words[i], w) && std::isfinite(w) && w > 0.0, "--data '{}': '{}' (word {}) should be a "
               "positive weight; write 'WEIGHT PATH WEIGHT PATH ...'", spec, words[i], i + 1);
    parts.emplace_back(w, words[i + 1]);
  }
  return parts;
}

namespace {

bool has_yaml_ext(const fs::path& p) {
  const std::string e = p.extension().string();
  return e == ".yaml" || e == ".yml";
}

// A blend file: a YAML list of {weight: W, path: P} maps (or NeMo's flat list
// [W1, P1, W2, P2]); relative paths are relative to the file's folder.
std::vector<std::pair<double, std::string>> parse_blend_yaml(const std::string& file) {
  YAML::Node root;
  try {
    root = YAML::LoadFile(file);
  } catch (const YAML::Exception& e) {
    PP3D_REQUIRE(false, "--data '{}': not a valid YAML blend file: {}", file, e.what());
  }
  const char* form = "a list of {weight: W, path: P} entries, e.g. '- {weight: 0.7, path: data/web}'";
  PP3D_REQUIRE(root.IsSequence() && root.size() >= 1, "--data '{}': a blend file must be {}", file, form);
  const fs::path base = fs::path(file).parent_path();
  auto resolve = [&](const std::string& path) {
    return fs::path(path).is_absolute() || base.empty() ? path : (base / path).string();
  };
  auto weight = [&](const YAML::Node& n, std::size_t i) {
    double w = 0.0;
    try {
      w = n.as<double>();
    } catch (const YAML::Exception&) {
      w = -1.0;
    }
    PP3D_REQUIRE(std::isfinite(w) && w > 0.0, "--data '{}': entry {} has weight '{}'; weights must be positive "
                 "numbers", file, i + 1, n.IsScalar() ? n.Scalar() : std::string("(not a number)"));
    return w;
  };
  std::vector<std::pair<double, std::string>> parts;
  if (root[0].IsScalar()) {  // flat [W1, P1, W2, P2, ...]
    PP3D_REQUIRE(root.size() % 2 == 0, "--data '{}': a flat blend list is pairs W1, P1, W2, P2, ... but it has {} "
                 "items", file, root.size());
    for (std::size_t i = 0; i < root.size(); i += 2) {
      PP3D_REQUIRE(root[i + 1].IsScalar(), "--data '{}': item {} should be a path", file, i + 2);
      parts.emplace_back(weight(root[i], i / 2), resolve(root[i + 1].Scalar()));
    }
    return parts;
  }
  for (std::size_t i = 0; i < root.size(); ++i) {
    const YAML::Node& e = root[i];
    PP3D_REQUIRE(e.IsMap() && e["weight"] && e["path"] && e["path"].IsScalar() && e.size() == 2,
                 "--data '{}': entry {} must be a map with exactly the keys weight and path ({})", file, i + 1, form);
    parts.emplace_back(weight(e["weight"], i), resolve(e["path"].Scalar()));
  }
  return parts;
}

}  // namespace

TokenDataset load_dataset(const std::string& spec, uint64_t seed, int64_t shard_vocab) {
  auto parts = parse_blend_spec(spec);
  if (parts.empty() && has_yaml_ext(spec) && fs::is_regular_file(spec)) parts = parse_blend_yaml(spec);
  if (parts.empty()) return load_single_dataset(spec, seed, shard_vocab);
  double total = 0.0;
  for (const auto& [w, path] : parts) total += w;
  TokenDataset d;
  d.vocab_size = 0;
  d.description = "blend of " + std::to_string(parts.size()) + " datasets:";
  for (const auto& [w, path] : parts) {
    auto part = std::make_shared<TokenDataset>(load_single_dataset(path, seed, shard_vocab));
    d.vocab_size = std::max(d.vocab_size, part->vocab_size);
    d.description += fmt::format(" [{:.4f}] {};", w / total, part->description);
    d.tokenizer = d.blend.empty() || d.tokenizer == part->tokenizer ? part->tokenizer : std::string();
    d.blend.push_back({w / total, path, std::move(part)});
  }
  return d;
}

}  // namespace pp3d
