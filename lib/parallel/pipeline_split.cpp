// PipelineSplit: balanced and explicit layer splits over virtual stages.
#include <charconv>

#include "pp3d/core/error.h"
#include "pp3d/parallel/pipeline_schedule.h"

namespace pp3d {

namespace {

void check_pp_v(int pp, int v) {
  PP3D_CHECK(pp >= 1, "pipeline split: pp must be >= 1, got {}", pp);
  PP3D_CHECK(v >= 1, "pipeline split: virtual stages per rank v must be >= 1, got {}", v);
}

std::string trim(std::string s) {
  const auto b = s.find_first_not_of(" \t");
  const auto e = s.find_last_not_of(" \t");
  return b == std::string::npos ? std::string() : s.substr(b, e - b + 1);
}

}  // namespace

PipelineSplit PipelineSplit::balanced(int64_t num_layers, int pp, int v) {
  check_pp_v(pp, v);
  const int64_t S = static_cast<int64_t>(pp) * v;
  PP3D_CHECK(num_layers >= S,
             "pipeline split: {} layers cannot fill pp*v = {} virtual stages (pp={}, v={}) with >= 1 layer each; "
             "use fewer stages or an explicit split",
             num_layers, S, pp, v);
  PipelineSplit s;
  s.pp = pp;
  s.v = v;
  for (int64_t i = 0; i < S; ++i) s.layers_per_stage.push_back(num_layers / S + (i < num_layers % S ? 1 : 0));
  return s;
}

PipelineSplit PipelineSplit::parse(const std::string& spec, int64_t num_layers, int pp, int v) {
  check_pp_v(pp, v);
  if (trim(spec).empty()) return balanced(num_layers, pp, v);
  const int S = pp * v;
  PipelineSplit s;
  s.pp = pp;
  s.v = v;
  std::size_t pos = 0;
  while (true) {
    const std::size_t comma = spec.find(',', pos);
    const std::string item = trim(spec.substr(pos, comma == std::string::npos ? std::string::npos : comma - pos));
    int64_t n = -1;
    const auto [ptr, ec] = std::from_chars(item.data(), item.data() + item.size(), n);
    PP3D_CHECK(!item.empty() && ec == std::errc() && ptr == item.data() + item.size(),
               "pipeline split '{}': entry {} ('{}') is not an integer", spec, s.layers_per_stage.size(), item);
    PP3D_CHECK(n >= 0, "pipeline split '{}': entry {} is negative ({})", spec, s.layers_per_stage.size(), n);
    s.layers_per_stage.push_back(n);
    if (comma == std::string::npos) break;
    pos = comma + 1;
  }
  PP3D_CHECK(static_cast<int>(s.layers_per_stage.size()) == S,
             "pipeline split '{}' has {} entries but needs one per virtual stage: pp*v = {} (pp={}, v={})", spec,
             s.layers_per_stage.size(), S, pp, v);
  int64_t sum = 0;
  for (int i = 0; i < S; ++i) {
    const int64_t n = s.layers_per_stage[static_cast<std::size_t>(i)];
    PP3D_CHECK(n >= 1 || i == 0 || i == S - 1,
               "pipeline split '{}': middle virtual stage {} has 0 layers (only the first and the last stage may "
               "be empty)",
               spec, i);
    sum += n;
  }
  PP3D_CHECK(sum == num_layers, "pipeline split '{}' sums to {} layers but the model has {}", spec, sum,
             num_layers);
  return s;
}

int64_t PipelineSplit::first_layer(int s) const {
  PP3D_CHECK(s >= 0 && s < num_stages(), "virtual stage {} out of range [0, {})", s, num_stages());
  int64_t f = 0;
  for (int i = 0; i < s; ++i) f += layers_per_stage[static_cast<std::size_t>(i)];
  return f;
}

int64_t PipelineSplit::end_layer(int s) const { return first_layer(s) + layers_per_stage[static_cast<std::size_t>(s)]; }

std::string PipelineSplit::str() const {
  std::string out;
  for (int s = 0; s < num_stages(); ++s) {
    if (!out.empty()) out += ' ';
    out += fmt::format("[{},{})", first_layer(s), end_layer(s));
  }
  return out;
}

}  // namespace pp3d
