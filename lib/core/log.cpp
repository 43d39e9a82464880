#include "pp3d/core/log.h"

#include <cstdlib>
#include <mutex>

#include <spdlog/sinks/basic_file_sink.h>
#include <spdlog/sinks/stdout_color_sinks.h>

namespace pp3d {

namespace {
std::once_flag g_once;
std::shared_ptr<spdlog::logger> g_logger;
}  // namespace

std::shared_ptr<spdlog::logger> logger() {
  std::call_once(g_once, [] {
    g_logger = std::make_shared<spdlog::logger>("pp3d", std::make_shared<spdlog::sinks::stderr_color_sink_mt>());
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
  l->sinks().push_back(sink);
  l->flush_on(spdlog::level::info);
}

}  // namespace pp3d
