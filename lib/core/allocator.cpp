#include "pp3d/core/allocator.h"

#include <cstdlib>
#include <new>

#include "pp3d/core/error.h"

namespace pp3d {

std::string_view mem_category_name(MemCategory c) {
  switch (c) {
    case MemCategory::Params: return "params";
    case MemCategory::Grads: return "grads";
    case MemCategory::Optimizer: return "optimizer";
    case MemCategory::Activations: return "activations";
    case MemCategory::Comm: return "comm";
    case MemCategory::Workspace: return "workspace";
    case MemCategory::Other: return "other";
  }
  return "?";
}

Allocator& Allocator::instance() {
  static Allocator a;
  return a;
}

void* Allocator::allocate(std::size_t bytes, Device device, MemCategory cat) {
  void* p = nullptr;
  const std::size_t n = bytes == 0 ? 64 : (bytes + 63) / 64 * 64;
  if (device.is_cpu()) {
    p = std::aligned_alloc(64, n);
    PP3D_CHECK(p != nullptr, "host allocation of {} bytes ({}) failed", bytes, mem_category_name(cat));
  } else {
    p = detail::cuda_malloc(n, device.index);
  }
  std::lock_guard<std::mutex> lock(mu_);
  const int d = static_cast<int>(device.type);
  auto& s = stats_[d][static_cast<int>(cat)];
  s.current += bytes;
  s.allocs += 1;
  if (s.current > s.peak) s.peak = s.current;
  std::size_t total = 0;
  for (auto& c : stats_[d]) total += c.current;
  if (total > total_peak_[d]) total_peak_[d] = total;
  return p;
}

void Allocator::deallocate(void* ptr, std::size_t bytes, Device device, MemCategory cat) noexcept {
  if (ptr == nullptr) return;
  if (device.is_cpu()) {
    std::free(ptr);
  } else {
    detail::cuda_free(ptr, device.index);
  }
  std::lock_guard<std::mutex> lock(mu_);
  auto& s = stats_[static_cast<int>(device.type)][static_cast<int>(cat)];
  s.current -= bytes;
}

MemStats Allocator::stats(MemCategory cat, DeviceType dev) const {
  std::lock_guard<std::mutex> lock(mu_);
  return stats_[static_cast<int>(dev)][static_cast<int>(cat)];
}

std::size_t Allocator::total_current(DeviceType dev) const {
  std::lock_guard<std::mutex> lock(mu_);
  std::size_t t = 0;
  for (auto& c : stats_[static_cast<int>(dev)]) t += c.current;
  return t;
}

std::size_t Allocator::total_peak(DeviceType dev) const {
  std::lock_guard<std::mutex> lock(mu_);
  return total_peak_[static_cast<int>(dev)];
}

void Allocator::reset_peak() {
  std::lock_guard<std::mutex> lock(mu_);
  for (int d = 0; d < 2; ++d) {
    std::size_t total = 0;
    for (auto& c : stats_[d]) {
      c.peak = c.current;
      total += c.current;
    }
    total_peak_[d] = total;
  }
}

}  // namespace pp3d
