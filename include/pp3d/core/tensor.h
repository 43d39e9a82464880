// Tensor: a contiguous, typed, shaped view of reference-counted storage.
//
// Storage is owned through a shared_ptr and released to the Allocator when the
// last Tensor referring to it goes away. Views (slice along dim 0, reshape)
// share storage. Copying a Tensor copies the handle, not the bytes; use
// clone() for a deep copy. Not thread-safe for concurrent mutation of the same
// tensor; distinct tensors may be used from distinct threads.
#pragma once

#include <cstdint>
#include <initializer_list>
#include <memory>
#include <string>
#include <vector>

#include "pp3d/core/allocator.h"
#include "pp3d/core/device.h"
#include "pp3d/core/dtype.h"
#include "pp3d/core/error.h"

namespace pp3d {

using Shape = std::vector<int64_t>;

std::string shape_str(const Shape& s);
int64_t shape_numel(const Shape& s);

class Storage {
 public:
  Storage(std::size_t bytes, Device device, MemCategory cat);
  ~Storage();
  Storage(const Storage&) = delete;
  Storage& operator=(const Storage&) = delete;

  void* data() const { return data_; }
  std::size_t bytes() const { return bytes_; }
  Device device() const { return device_; }
  MemCategory category() const { return cat_; }

 private:
  void* data_ = nullptr;
  std::size_t bytes_ = 0;
  Device device_;
  MemCategory cat_;
};

class Tensor {
 public:
  Tensor() = default;  // undefined tensor: defined() == false

  // Uninitialised tensor.
  static Tensor empty(const Shape& shape, DType dtype = DType::F32, Device device = Device::cpu(),
                      MemCategory cat = MemCategory::Other);
  // Zero-filled tensor.
  static Tensor zeros(const Shape& shape, DType dtype = DType::F32, Device device = Device::cpu(),
                      MemCategory cat = MemCategory::Other);
  // Host f32 tensor holding `values` (size must equal the shape's element count).
  static Tensor from_vector(const Shape& shape, const std::vector<float>& values,
                            MemCategory cat = MemCategory::Other);
  static Tensor from_vector_i32(const Shape& shape, const std::vector<int32_t>& values,
                                MemCategory cat = MemCategory::Other);

  bool defined() const { return storage_ != nullptr; }
  const Shape& shape() const { return shape_; }
  int64_t dim() const { return static_cast<int64_t>(shape_.size()); }
  int64_t size(int64_t d) const;  // negative d counts from the end
  int64_t numel() const { return numel_; }
  std::size_t nbytes() const { return static_cast<std::size_t>(numel_) * dtype_size(dtype_); }
  DType dtype() const { return dtype_; }
  Device device() const { return storage_ ? storage_->device() : Device::cpu(); }
  MemCategory category() const { return storage_ ? storage_->category() : MemCategory::Other; }

  void* raw() const;
  template <typename T>
  T* data() const { return static_cast<T*>(raw()); }

  // Rows [begin, end) along dim 0, sharing storage.
  Tensor slice(int64_t begin, int64_t end) const;
  // Same storage, new shape with the same element count (one -1 allowed).
  Tensor reshape(const Shape& shape) const;
  // Deep copy, optionally to another device/category.
  Tensor clone(MemCategory cat = MemCategory::Other) const;
  Tensor to(Device device, MemCategory cat = MemCategory::Other) const;
  // Copies all bytes from `src` (same shape and dtype; any devices).
  void copy_from(const Tensor& src);
  void zero_();

  // Host-only conveniences (throw for device tensors): values as f32 (casting
  // from bf16/f16/i32), and a copy-in from f32.
  std::vector<float> to_vector() const;
  void fill_from(const std::vector<float>& values);

  std::string str() const;  // "f32[2, 3]@cpu"

 private:
  std::shared_ptr<Storage> storage_;
  std::size_t offset_ = 0;  // bytes into storage
  Shape shape_;
  int64_t numel_ = 0;
  DType dtype_ = DType::F32;
};

// Shape/dtype guards used by backends: they throw a pp3d::Error naming `what`.
void check_shape(const Tensor& t, const Shape& expected, const char* what);
void check_dtype(const Tensor& t, DType expected, const char* what);
void check_same_numel(const Tensor& a, const Tensor& b, const char* what);

}  // namespace pp3d
