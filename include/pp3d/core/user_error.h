// pp3d::UserError and PP3D_REQUIRE: failed checks of user input (flags, config
// files, paths, layouts). Unlike PP3D_CHECK (internal invariants, whose what()
// leads with file:line), programs print only message(), one sentence that names
// the input and the fix, and leave where() to the debug log.
#pragma once

#include <string>
#include <utility>

#include "pp3d/core/error.h"

namespace pp3d {

class UserError : public Error {
 public:
  UserError(const std::string& what, std::string message, std::string where)
      : Error(what), message_(std::move(message)), where_(std::move(where)) {}
  // The sentence alone (no rank, location or expression).
  const std::string& message() const { return message_; }
  // "[rank r] file:line in func(): check failed: expr".
  const std::string& where() const { return where_; }

 private:
  std::string message_, where_;
};

namespace detail {
// expr == nullptr: an unconditional failure.
[[noreturn]] void throw_user_error(const char* file, int line, const char* func, const char* expr,
                                   const std::string& message);
}  // namespace detail

}  // namespace pp3d

// PP3D_REQUIRE(cond, "format {}", args...): throws pp3d::UserError when cond is false.
#define PP3D_REQUIRE(cond, ...)                                                                        \
  do {                                                                                                 \
    if (!(cond)) [[unlikely]] {                                                                        \
      ::pp3d::detail::throw_user_error(__FILE__, __LINE__, __func__, #cond, ::fmt::format(__VA_ARGS__)); \
    }                                                                                                  \
  } while (0)

// PP3D_USER_FAIL("format {}", args...): unconditional UserError.
#define PP3D_USER_FAIL(...) \
  ::pp3d::detail::throw_user_error(__FILE__, __LINE__, __func__, nullptr, ::fmt::format(__VA_ARGS__))
