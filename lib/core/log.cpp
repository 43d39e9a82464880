#include "pp3d/core/log.h"

#include <algorithm>
#include <cstdlib>
#include <mutex>

#include <spdlog/sinks/basic_file_sink.h>
#include <spdlog/sinks/ringbuffer_sink.h>
#include <spdlog/sinks/stdout_color_sinks.h>

namespace pp3d {

namespace {
std::once_flag g_once;
std::shared_ptr<spdlog::logger> g_logger;
// Holds the messages logged before the first log file is opened (e.g. pp3d-train's "auto layout: ..."
// decision, made before the Trainer opens train.log), so that file starts with them too.
std::shared_ptr<spdlog::sinks::ringbuffer_sink_mt> g_backlog;
}  // namespace

std::shared_ptr<spdlog::logger> logger() {
  std::call_once(g_once, [] {
    g_logger = std::make_shared<spdlog::logger>("pp3d", std::make_shared<spdlog::sinks::stderr_color_sink_mt>());
    g_backlog = std::make_shared<spdlog::sinks::ringbuffer_sink_mt>(256);
    g_logger->sinks().push_back(g_backlog);
    g_logger->set_pattern("[%H:%M:%S] [%^%l%$] %v");
    if (const char* lvl = std::getenv("PP3D_LOG_LEVEL")) g_logger->set_level(spdlog::level::from_str(lvl));
  });
  return g_logger;
}

void set_log_rank(int rank) {
  auto l = logger();
  l->set_pattern(fmt::format("[%H:%M:%S] [rank {}] [%^%l%$] %v", rank));
  const char* all = std::getenv("PP3D_LOG_ALL_RANKS");
  if (rank != 0 && !(all && std::string(all) == "1") && l->level() < spdlog::level::warn)
    l->set_level(spdlog::level::warn);
}

void add_log_file(const std::string& path) {
  auto l = logger();
  auto sink = std::make_shared<spdlog::sinks::basic_file_sink_mt>(path, false);
  sink->set_pattern("[%Y-%m-%d %H:%M:%S.%e] [%l] %v");
  auto& sinks = l->sinks();
  if (const auto it = std::find(sinks.begin(), sinks.end(), g_backlog); it != sinks.end()) {
    for (const auto& msg : g_backlog->last_raw()) sink->log(msg);
    sinks.erase(it);  // only the first log file replays the backlog
  }
  sinks.push_back(sink);
  l->flush_on(spdlog::level::info);
}

}  // namespace pp3d
