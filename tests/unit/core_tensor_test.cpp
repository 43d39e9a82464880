// Core: Tensor views, dtype conversions, allocator accounting, errors.
#include <catch2/catch.hpp>

#include <cmath>
#include <limits>

#include "pp3d/core/allocator.h"
#include "pp3d/core/dtype.h"
#include "pp3d/core/error.h"
#include "pp3d/core/tensor.h"

using namespace pp3d;

TEST_CASE("tensor slice and reshape share storage", "[core]") {
  Tensor t = Tensor::zeros({5, 3});
  REQUIRE(t.numel() == 15);
  Tensor s = t.slice(1, 3);
  REQUIRE(s.shape() == Shape{2, 3});
  s.data<float>()[0] = 7.0f;  // row 1, col 0 of t
  REQUIRE(t.data<float>()[3] == 7.0f);
  Tensor r = t.reshape({3, -1});
  REQUIRE(r.shape() == Shape{3, 5});
  REQUIRE(r.data<float>()[3] == 7.0f);
  REQUIRE_THROWS_AS(t.reshape({4, 4}), Error);
  REQUIRE_THROWS_AS(t.slice(2, 6), Error);
  Tensor c = t.clone();
  c.data<float>()[3] = 1.0f;
  REQUIRE(t.data<float>()[3] == 7.0f);
}

TEST_CASE("tensor values round-trip through every dtype", "[core]") {
  std::vector<float> v = {0.0f, 1.0f, -2.5f, 3.140625f, 65504.0f, -1e-3f, 42.0f};
  for (DType d : {DType::F32, DType::BF16, DType::F16, DType::I32}) {
    Tensor t = Tensor::empty({static_cast<int64_t>(v.size())}, d);
    t.fill_from(v);
    auto back = t.to_vector();
    for (std::size_t i = 0; i < v.size(); ++i) {
      const float tol = d == DType::F32 ? 0.0f : d == DType::BF16 ? std::fabs(v[i]) / 128 : std::fabs(v[i]) / 1024;
      if (d == DType::I32) {
        REQUIRE(back[i] == static_cast<float>(static_cast<int32_t>(v[i])));
      } else {
        REQUIRE(std::fabs(back[i] - v[i]) <= tol + 1e-7f);
      }
    }
  }
}

TEST_CASE("f16 and bf16 conversions round to nearest even and keep specials", "[core]") {
  // exhaustive over all 65536 half values: f16 -> f32 -> f16 is the identity (NaNs stay NaN)
  for (uint32_t h = 0; h < 65536; ++h) {
    const float f = f16_to_f32(static_cast<uint16_t>(h));
    const uint16_t back = f32_to_f16(f);
    if (std::isnan(f)) {
      REQUIRE(std::isnan(f16_to_f32(back)));
    } else {
      REQUIRE(back == h);
    }
    const float b = bf16_to_f32(static_cast<uint16_t>(h));
    if (!std::isnan(b)) REQUIRE(f32_to_bf16(b) == h);
  }
  REQUIRE(f16_to_f32(f32_to_f16(1.0f + 1.0f / 2048)) == 1.0f);             // tie -> even
  REQUIRE(f16_to_f32(f32_to_f16(1.0f + 3.0f / 2048)) == 1.0f + 2.0f / 1024);  // tie -> even (up)
  REQUIRE(std::isinf(f16_to_f32(f32_to_f16(70000.0f))));
  REQUIRE(f16_to_f32(f32_to_f16(5.96e-8f)) == std::ldexp(1.0f, -24));  // smallest subnormal
  REQUIRE(bf16_to_f32(f32_to_bf16(1.0f + 1.0f / 256)) == 1.0f);        // tie -> even
  REQUIRE(std::isnan(bf16_to_f32(f32_to_bf16(std::numeric_limits<float>::quiet_NaN()))));
}

TEST_CASE("allocator accounts current and peak bytes per category", "[core]") {
  auto& a = Allocator::instance();
  const auto before = a.stats(MemCategory::Workspace);
  {
    Tensor t = Tensor::empty({1000}, DType::F32, Device::cpu(), MemCategory::Workspace);
    Tensor u = Tensor::empty({500}, DType::BF16, Device::cpu(), MemCategory::Workspace);
    REQUIRE(a.stats(MemCategory::Workspace).current == before.current + 4000 + 1000);
    Tensor view = t.slice(0, 10);  // views allocate nothing
    REQUIRE(a.stats(MemCategory::Workspace).current == before.current + 5000);
  }
  const auto after = a.stats(MemCategory::Workspace);
  REQUIRE(after.current == before.current);
  REQUIRE(after.peak >= before.current + 5000);
  a.reset_peak();
  REQUIRE(a.stats(MemCategory::Workspace).peak == after.current);
}

TEST_CASE("errors carry location and the failed values", "[core]") {
  try {
    PP3D_CHECK(1 + 1 == 3, "expected {} got {}", 3, 2);
    FAIL("no throw");
  } catch (const Error& e) {
    std::string msg = e.what();
    REQUIRE(msg.find("core_tensor_test.cpp") != std::string::npos);
    REQUIRE(msg.find("expected 3 got 2") != std::string::npos);
  }
  REQUIRE_THROWS_WITH(Tensor::empty({2}, DType::F32, Device::cuda(0)).numel(),
                      Catch::Contains(cuda_compiled() ? "cuda" : "built without CUDA"));
}
