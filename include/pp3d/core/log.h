// Logging through spdlog: one "pp3d" logger, rank-prefixed once the rank is known.
#pragma once

#include <memory>
#include <string>

#include <spdlog/spdlog.h>

namespace pp3d {

// The library's logger (created on first use, writes to stderr).
std::shared_ptr<spdlog::logger> logger();
// Adds the rank to every message and, where rank != 0, raises the level to
// warn unless PP3D_LOG_ALL_RANKS=1 (so a 64-rank job does not print 64 times).
void set_log_rank(int rank);
// Also writes to `path` (appending), e.g. <output>/train.log.
void add_log_file(const std::string& path);

}  // namespace pp3d
