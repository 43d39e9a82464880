// pp3d::Error and the PP3D_CHECK family.
//
// Every failed check throws pp3d::Error (a std::runtime_error) whose message
// carries file:line, the function, the calling rank (when known) and a
// formatted explanation. The library never calls exit() and never throws from
// destructors.
#pragma once

#include <stdexcept>
#include <string>

#include <fmt/format.h>

namespace pp3d {

class Error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// The rank printed in error messages (-1 = unknown, not printed). Set once by
// the communicator bootstrap; thread-safe to read.
void set_error_rank(int rank);
int error_rank();

namespace detail {
[[noreturn]] void throw_error(const char* file, int line, const char* func, const std::string& what);
}  // namespace detail

}  // namespace pp3d

// PP3D_CHECK(cond, "format {}", args...): throws pp3d::Error when cond is false.
#define PP3D_CHECK(cond, ...)                                                              \
  do {                                                                                     \
    if (!(cond)) [[unlikely]] {                                                            \
      ::pp3d::detail::throw_error(__FILE__, __LINE__, __func__,                            \
                                  std::string("check failed: " #cond ": ") +               \
                                      ::fmt::format(__VA_ARGS__));                         \
    }                                                                                      \
  } while (0)

// PP3D_FAIL("format {}", args...): unconditional error.
#define PP3D_FAIL(...) \
  ::pp3d::detail::throw_error(__FILE__, __LINE__, __func__, ::fmt::format(__VA_ARGS__))
