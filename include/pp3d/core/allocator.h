// Byte accounting per memory category, for every allocation pp3d makes.
//
// Every Tensor's storage is obtained from the Allocator with a category; the
// allocator records current and peak bytes per (category, device type). This is
// how ZeRO memory claims and the planner's predictions are checked in tests.
// Thread-safe (one mutex); the singleton lives for the whole process.
#pragma once

#include <array>
#include <cstddef>
#include <mutex>
#include <string_view>

#include "pp3d/core/device.h"

namespace pp3d {

enum class MemCategory : uint8_t { Params, Grads, Optimizer, Activations, Comm, Workspace, Other };
constexpr int kNumMemCategories = 7;

std::string_view mem_category_name(MemCategory c);

struct MemStats {
  std::size_t current = 0;  // bytes live now
  std::size_t peak = 0;     // high-water mark since the last reset_peak()
  std::size_t allocs = 0;   // number of allocations made
};

class Allocator {
 public:
  static Allocator& instance();

  // Allocates `bytes` (64-byte aligned) on `device`, charged to `cat`.
  void* allocate(std::size_t bytes, Device device, MemCategory cat);
  // Releases memory obtained from allocate() with the same size/device/category.
  void deallocate(void* ptr, std::size_t bytes, Device device, MemCategory cat) noexcept;

  MemStats stats(MemCategory cat, DeviceType dev = DeviceType::CPU) const;
  // Sum of current bytes over all categories on one device type.
  std::size_t total_current(DeviceType dev = DeviceType::CPU) const;
  std::size_t total_peak(DeviceType dev = DeviceType::CPU) const;
  // Sets each category's peak to its current value.
  void reset_peak();

 private:
  Allocator() = default;
  mutable std::mutex mu_;
  std::array<std::array<MemStats, kNumMemCategories>, 2> stats_{};
  std::array<std::size_t, 2> total_peak_{};
};

namespace detail {
// Device memory hooks, implemented in lib/backend/cuda when CUDA is compiled,
// otherwise by stubs that throw a clear error.
void* cuda_malloc(std::size_t bytes, int device);
void cuda_free(void* ptr, int device) noexcept;
// Copies between host and device memory (kind inferred from the devices).
void cuda_memcpy(void* dst, Device dst_dev, const void* src, Device src_dev, std::size_t bytes);
void cuda_memset_zero(void* dst, int device, std::size_t bytes);
}  // namespace detail

}  // namespace pp3d
