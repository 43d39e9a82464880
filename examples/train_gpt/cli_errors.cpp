#include "cli_errors.h"

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <sstream>
#include <vector>

#include <fmt/format.h>
#include <fmt/ranges.h>

#include "pp3d/core/log.h"

namespace pp3d::cli {

namespace {

size_t edit_distance(const std::string& a, const std::string& b) {
  std::vector<size_t> row(b.size() + 1);
  for (size_t j = 0; j <= b.size(); ++j) row[j] = j;
  for (size_t i = 1; i <= a.size(); ++i) {
    size_t diag = row[0];
    row[0] = i;
    for (size_t j = 1; j <= b.size(); ++j) {
      const size_t up = row[j];
      row[j] = std::min({row[j] + 1, row[j - 1] + 1, diag + (a[i - 1] == b[j - 1] ? 0 : 1)});
      diag = up;
    }
  }
  return row[b.size()];
}

std::vector<std::string> flag_names(const CLI::App& app) {
  std::vector<std::string> names;
  for (const CLI::Option* op : app.get_options()) {
    for (const std::string& n : op->get_lnames()) names.push_back("--" + n);
    for (std::string n : op->get_fnames()) {  // flags with a default value, e.g. "!--no-progress"
      n.erase(0, n.find_first_not_of("!-"));
      names.push_back("--" + n);
    }
  }
  if (const char* extra = std::getenv("PP3D_EXTRA_FLAG_NAMES")) {
    std::istringstream in(extra);
    for (std::string n; in >> n;) names.push_back(n);
  }
  return names;
}

// "unknown flag '--max-step' (did you mean --max-steps?)" for each unknown flag, else the stray values.
std::string unexpected_message(const CLI::App& app) {
  std::vector<std::string> flags, values;
  for (const std::string& arg : app.remaining()) (arg.size() > 1 && arg[0] == '-' ? flags : values).push_back(arg);
  std::string msg;
  for (const std::string& f : flags) {
    const std::string name = f.substr(0, f.find('='));
    const std::string near = closest_flag(app, name);
    msg += fmt::format("{}unknown flag '{}'{}", msg.empty() ? "" : "; ", name,
                       near.empty() ? "" : fmt::format(" (did you mean {}?)", near));
  }
  if (flags.empty())
    msg = fmt::format("unexpected argument{} '{}' (every flag takes at most one value; quote values with spaces)",
                      values.size() > 1 ? "s" : "", fmt::join(values, " "));
  return msg + "; pp3d-train --help lists every flag";
}

}  // namespace

int launch_rank() {
  for (const char* var : {"OMPI_COMM_WORLD_RANK", "PMI_RANK", "PMIX_RANK", "RANK"})
    if (const char* v = std::getenv(var)) return std::atoi(v);
  return 0;
}

std::string closest_flag(const CLI::App& app, const std::string& typed) {
  std::string best;
  size_t best_d = std::max<size_t>(2, typed.size() / 4) + 1;  // further than this is no suggestion
  for (const std::string& name : flag_names(app)) {
    const size_t d = name.rfind(typed, 0) == 0 && typed.size() >= 5 ? 1 : edit_distance(typed, name);
    if (d < best_d) best_d = d, best = name;
  }
  return best;
}

int report_parse_error(const CLI::App& app, const CLI::ParseError& e) {
  if (e.get_exit_code() == 0) return app.exit(e);  // --help
  const std::string msg = dynamic_cast<const CLI::ExtrasError*>(&e) ? unexpected_message(app) : e.what();
  // Under mpirun every rank parses the same command line: one message per job.
  if (launch_rank() == 0) std::fprintf(stderr, "pp3d-train: error: %s\n", msg.c_str());
  return 2;
}

void report_error(const Error& e, int rank) {
  const std::string on_rank = rank >= 0 ? fmt::format(" on rank {}", rank) : std::string();
  if (const auto* user = dynamic_cast<const UserError*>(&e)) {
    logger()->debug("error raised at {}", user->where());
    std::fprintf(stderr, "pp3d-train: error%s: %s\n", on_rank.c_str(), user->message().c_str());
  } else {
    std::fprintf(stderr, "pp3d-train: error%s: %s\n", on_rank.c_str(), e.what());
  }
}

}  // namespace pp3d::cli
