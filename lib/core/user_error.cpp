#include "pp3d/core/user_error.h"

namespace pp3d::detail {

void throw_user_error(const char* file, int line, const char* func, const char* expr, const std::string& message) {
  const int rank = error_rank();
  std::string where = rank >= 0 ? fmt::format("[rank {}] ", rank) : std::string();
  where += fmt::format("{}:{} in {}()", file, line, func);
  if (expr != nullptr) where += fmt::format(": check failed: {}", expr);
  throw UserError(fmt::format("{}: {}", where, message), message, where);  // what() reads like PP3D_CHECK's
}

}  // namespace pp3d::detail
