#include "pp3d/core/error.h"

#include <atomic>

namespace pp3d {

namespace {
std::atomic<int> g_error_rank{-1};
}

void set_error_rank(int rank) { g_error_rank.store(rank); }
int error_rank() { return g_error_rank.load(); }

namespace detail {
void throw_error(const char* file, int line, const char* func, const std::string& what) {
  const int rank = error_rank();
  std::string where = rank >= 0 ? fmt::format("[rank {}] ", rank) : std::string();
  throw Error(fmt::format("{}{}:{} in {}(): {}", where, file, line, func, what));
}
}  // namespace detail

}  // namespace pp3d
