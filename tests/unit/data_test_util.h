// Helpers shared by the data tests (train_data_test, train_data_epoch_test).
#pragma once

#include <unistd.h>

#include <filesystem>
#include <functional>
#include <string>
#include <vector>

#include "pp3d/core/error.h"
#include "pp3d/core/tensor.h"

namespace pp3d::test {

// The message of the pp3d::Error f throws, or "<no error>".
inline std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "<no error>";
}

// An empty folder <tmp>/pp3d_<name>_<pid> (removed first if it exists).
inline std::filesystem::path fresh_temp_dir(const std::string& name) {
  const auto d = std::filesystem::temp_directory_path() / ("pp3d_" + name + "_" + std::to_string(::getpid()));
  std::filesystem::remove_all(d);
  std::filesystem::create_directories(d);
  return d;
}

// The values of an i32 host tensor.
inline std::vector<int32_t> i32_values(const Tensor& t) {
  return std::vector<int32_t>(t.data<int32_t>(), t.data<int32_t>() + t.numel());
}

}  // namespace pp3d::test
