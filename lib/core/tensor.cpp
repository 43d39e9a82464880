#include "pp3d/core/tensor.h"

#include <cstring>

#include <fmt/format.h>
#include <fmt/ranges.h>

namespace pp3d {

std::string shape_str(const Shape& s) { return fmt::format("[{}]", fmt::join(s, ", ")); }

int64_t shape_numel(const Shape& s) {
  int64_t n = 1;
  for (auto d : s) {
    PP3D_CHECK(d >= 0, "negative dimension in shape {}", shape_str(s));
    n *= d;
  }
  return n;
}

Storage::Storage(std::size_t bytes, Device device, MemCategory cat)
    : bytes_(bytes), device_(device), cat_(cat) {
  data_ = Allocator::instance().allocate(bytes, device, cat);
}

Storage::~Storage() { Allocator::instance().deallocate(data_, bytes_, device_, cat_); }

Tensor Tensor::empty(const Shape& shape, DType dtype, Device device, MemCategory cat) {
  Tensor t;
  t.shape_ = shape;
  t.numel_ = shape_numel(shape);
  t.dtype_ = dtype;
  t.storage_ = std::make_shared<Storage>(t.nbytes(), device, cat);
  return t;
}

Tensor Tensor::zeros(const Shape& shape, DType dtype, Device device, MemCategory cat) {
  Tensor t = empty(shape, dtype, device, cat);
  t.zero_();
  return t;
}

Tensor Tensor::from_vector(const Shape& shape, const std::vector<float>& values, MemCategory cat) {
  Tensor t = empty(shape, DType::F32, Device::cpu(), cat);
  t.fill_from(values);
  return t;
}

Tensor Tensor::from_vector_i32(const Shape& shape, const std::vector<int32_t>& values, MemCategory cat) {
  Tensor t = empty(shape, DType::I32, Device::cpu(), cat);
  PP3D_CHECK(static_cast<int64_t>(values.size()) == t.numel(), "{} values for shape {}", values.size(),
             shape_str(shape));
  std::memcpy(t.raw(), values.data(), t.nbytes());
  return t;
}

int64_t Tensor::size(int64_t d) const {
  if (d < 0) d += dim();
  PP3D_CHECK(d >= 0 && d < dim(), "dimension {} out of range for shape {}", d, shape_str(shape_));
  return shape_[static_cast<std::size_t>(d)];
}

void* Tensor::raw() const {
  PP3D_CHECK(defined(), "access to an undefined tensor");
  return static_cast<char*>(storage_->data()) + offset_;
}

Tensor Tensor::slice(int64_t begin, int64_t end) const {
  PP3D_CHECK(dim() >= 1, "slice of a 0-d tensor");
  PP3D_CHECK(0 <= begin && begin <= end && end <= shape_[0], "slice [{}, {}) out of range for shape {}",
             begin, end, shape_str(shape_));
  Tensor t = *this;
  const int64_t row = shape_[0] == 0 ? 0 : numel_ / shape_[0];
  t.offset_ += static_cast<std::size_t>(begin * row) * dtype_size(dtype_);
  t.shape_[0] = end - begin;
  t.numel_ = row * (end - begin);
  return t;
}

Tensor Tensor::reshape(const Shape& shape) const {
  Shape s = shape;
  int64_t known = 1;
  int infer = -1;
  for (std::size_t i = 0; i < s.size(); ++i) {
    if (s[i] == -1) {
      PP3D_CHECK(infer < 0, "more than one -1 in reshape {}", shape_str(shape));
      infer = static_cast<int>(i);
    } else {
      known *= s[i];
    }
  }
  if (infer >= 0) {
    PP3D_CHECK(known > 0 && numel_ % known == 0, "cannot reshape {} to {}", shape_str(shape_), shape_str(shape));
    s[static_cast<std::size_t>(infer)] = numel_ / known;
  }
  PP3D_CHECK(shape_numel(s) == numel_, "cannot reshape {} ({} elements) to {}", shape_str(shape_), numel_,
             shape_str(shape));
  Tensor t = *this;
  t.shape_ = s;
  return t;
}

Tensor Tensor::clone(MemCategory cat) const { return to(device(), cat); }

Tensor Tensor::to(Device device, MemCategory cat) const {
  Tensor t = empty(shape_, dtype_, device, cat);
  t.copy_from(*this);
  return t;
}

void Tensor::copy_from(const Tensor& src) {
  PP3D_CHECK(src.dtype() == dtype_ && src.numel() == numel_, "copy_from {} into {}", src.str(), str());
  if (nbytes() == 0) return;
  if (device().is_cpu() && src.device().is_cpu()) {
    std::memmove(raw(), src.raw(), nbytes());
  } else {
    detail::cuda_memcpy(raw(), device(), src.raw(), src.device(), nbytes());
  }
}

void Tensor::zero_() {
  if (nbytes() == 0) return;
  if (device().is_cpu()) {
    std::memset(raw(), 0, nbytes());
  } else {
    detail::cuda_memset_zero(raw(), device().index, nbytes());
  }
}

std::vector<float> Tensor::to_vector() const {
  PP3D_CHECK(device().is_cpu(), "to_vector() of a {} tensor: copy it to the host first", device().str());
  std::vector<float> out(static_cast<std::size_t>(numel_));
  for (int64_t i = 0; i < numel_; ++i) {
    switch (dtype_) {
      case DType::F32: out[i] = data<float>()[i]; break;
      case DType::BF16: out[i] = bf16_to_f32(data<uint16_t>()[i]); break;
      case DType::F16: out[i] = f16_to_f32(data<uint16_t>()[i]); break;
      case DType::I32: out[i] = static_cast<float>(data<int32_t>()[i]); break;
    }
  }
  return out;
}

void Tensor::fill_from(const std::vector<float>& values) {
  PP3D_CHECK(device().is_cpu(), "fill_from() of a {} tensor", device().str());
  PP3D_CHECK(static_cast<int64_t>(values.size()) == numel_, "{} values for tensor {}", values.size(), str());
  for (int64_t i = 0; i < numel_; ++i) {
    switch (dtype_) {
      case DType::F32: data<float>()[i] = values[i]; break;
      case DType::BF16: data<uint16_t>()[i] = f32_to_bf16(values[i]); break;
      case DType::F16: data<uint16_t>()[i] = f32_to_f16(values[i]); break;
      case DType::I32: data<int32_t>()[i] = static_cast<int32_t>(values[i]); break;
    }
  }
}

std::string Tensor::str() const {
  if (!defined()) return "undefined";
  return fmt::format("{}{}@{}", dtype_name(dtype_), shape_str(shape_), device().str());
}

void check_shape(const Tensor& t, const Shape& expected, const char* what) {
  PP3D_CHECK(t.defined(), "{} is undefined", what);
  PP3D_CHECK(t.shape() == expected, "{} has shape {}, expected {}", what, shape_str(t.shape()),
             shape_str(expected));
}

void check_dtype(const Tensor& t, DType expected, const char* what) {
  PP3D_CHECK(t.defined(), "{} is undefined", what);
  PP3D_CHECK(t.dtype() == expected, "{} has dtype {}, expected {}", what, dtype_name(t.dtype()),
             dtype_name(expected));
}

void check_same_numel(const Tensor& a, const Tensor& b, const char* what) {
  PP3D_CHECK(a.numel() == b.numel(), "{}: {} vs {} elements ({} / {})", what, a.numel(), b.numel(), a.str(),
             b.str());
}

}  // namespace pp3d
