// Layout printing and parsing.
#include "pp3d/plan/layout.h"

#include <charconv>
#include <optional>

#include <fmt/format.h>

#include "pp3d/core/error.h"

namespace pp3d {

const char* schedule_name(Schedule s) {
  switch (s) {
    case Schedule::GPipe: return "gpipe";
    case Schedule::OneFOneB: return "1f1b";
    case Schedule::Interleaved: return "interleaved";
    case Schedule::ZeroBubbleH1: return "zb-h1";
  }
  return "?";
}

const char* recompute_name(Recompute r) { return r == Recompute::Full ? "full" : "none"; }

std::string Layout::str() const {
  std::string sched = schedule_name(schedule);
  if (schedule == Schedule::Interleaved) sched += fmt::format(" v={}", virtual_stages);
  return fmt::format("tp={} pp={} dp={} zero={} mb={} {} recompute={} sp={}{}", tp, pp, dp, zero_stage, micro_batch,
                     sched, recompute_name(recompute), sequence_parallel ? 1 : 0, uneven_pp ? " uneven" : "");
}

std::string Layout::spec() const {
  return fmt::format("tp={},pp={},dp={},zero={},mb={},sched={},v={},recompute={},sp={},uneven={}", tp, pp, dp,
                     zero_stage, micro_batch, schedule_name(schedule), virtual_stages, recompute_name(recompute),
                     sequence_parallel ? 1 : 0, uneven_pp ? 1 : 0);
}

namespace {
int64_t parse_int(const std::string& key, const std::string& v) {
  int64_t x = 0;
  const auto [p, ec] = std::from_chars(v.data(), v.data() + v.size(), x);
  PP3D_CHECK(ec == std::errc() && p == v.data() + v.size(), "layout: '{}' needs an integer, got '{}'", key, v);
  return x;
}
bool parse_bool(const std::string& key, const std::string& v) {
  if (v == "1" || v == "on" || v == "true" || v == "yes") return true;
  if (v == "0" || v == "off" || v == "false" || v == "no") return false;
  PP3D_FAIL("layout: '{}' needs 0/1/on/off, got '{}'", key, v);
}
}  // namespace

Layout parse_layout(const std::string& text) {
  Layout l;
  l.dp = 0;
  std::optional<bool> sp;
  bool v_set = false;
  std::size_t pos = 0;
  while (pos < text.size()) {
    const std::size_t end = text.find_first_of(", ", pos);
    const std::string item = text.substr(pos, end == std::string::npos ? std::string::npos : end - pos);
    pos = end == std::string::npos ? text.size() : end + 1;
    if (item.empty()) continue;
    const std::size_t eq = item.find('=');
    PP3D_CHECK(eq != std::string::npos, "layout: expected key=value, got '{}' in '{}'", item, text);
    const std::string k = item.substr(0, eq), v = item.substr(eq + 1);
    if (k == "tp") l.tp = static_cast<int>(parse_int(k, v));
    else if (k == "pp") l.pp = static_cast<int>(parse_int(k, v));
    else if (k == "dp") l.dp = static_cast<int>(parse_int(k, v));
    else if (k == "zero") l.zero_stage = static_cast<int>(parse_int(k, v));
    else if (k == "mb") l.micro_batch = parse_int(k, v);
    else if (k == "v") l.virtual_stages = static_cast<int>(parse_int(k, v)), v_set = true;
    else if (k == "sp") sp = parse_bool(k, v);
    else if (k == "uneven") l.uneven_pp = parse_bool(k, v);
    else if (k == "recompute") {
      if (v == "none" || v == "0" || v == "off") l.recompute = Recompute::None;
      else if (v == "full" || v == "1" || v == "on") l.recompute = Recompute::Full;
      else PP3D_FAIL("layout: recompute must be none or full, got '{}'", v);
    } else if (k == "sched" || k == "schedule") {
      if (v == "gpipe") l.schedule = Schedule::GPipe;
      else if (v == "1f1b") l.schedule = Schedule::OneFOneB;
      else if (v == "interleaved") l.schedule = Schedule::Interleaved;
      else if (v == "zb-h1") l.schedule = Schedule::ZeroBubbleH1;
      else PP3D_FAIL("layout: schedule must be gpipe, 1f1b, interleaved or zb-h1, got '{}'", v);
    } else {
      PP3D_FAIL("layout: unknown key '{}' in '{}' (known: tp pp dp zero mb sched v recompute sp uneven)", k, text);
    }
  }
  if (l.schedule == Schedule::Interleaved && !v_set) l.virtual_stages = 2;  // Megatron's usual choice
  l.sequence_parallel = sp.value_or(l.tp > 1);
  return l;
}

}  // namespace pp3d
