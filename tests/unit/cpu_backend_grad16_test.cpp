// CpuBackend with 16-bit parameter-gradient outputs (GptOptions::grad_dtype,
// --grad-dtype param): every op that writes a parameter gradient (gemm's c,
// bias_grad, layernorm_backward dweight/dbias, embedding_backward dtable, the
// axpy / scale of the gradient reductions and clipping) and adamw_step reading
// a 16-bit gradient. Contract checked here: a 16-bit gradient g receives
// exactly round_nearest_even(g + the f32 op's contribution), i.e. the f32 op
// run on g's values then rounded — bitwise (0 ulp), over two calls so the
// accumulation (+=) with a rounding after each call is checked too.
#include <functional>

#include "pp3d/backend/backend.h"
#include "test_util.h"

using namespace pp3d;
using namespace pp3d::test;

namespace {

Tensor as_dtype(const Tensor& f32, DType dt) {
  Tensor t = Tensor::empty(f32.shape(), dt);
  t.fill_from(f32.to_vector());
  return t;
}

// Runs `op` twice on a 16-bit gradient and on the f32 reference (which is
// re-rounded to 16-bit after each call) and requires bitwise equal values.
void check_accumulating(DType dt, const Shape& gshape, const std::function<void(Tensor&)>& op) {
  Tensor g16 = as_dtype(random_tensor(gshape, 91), dt);  // nonzero start: += is visible
  Tensor ref = g16.clone();
  for (int call = 0; call < 2; ++call) {
    op(g16);
    Tensor g32 = Tensor::from_vector(gshape, ref.to_vector());
    op(g32);
    ref = as_dtype(g32, dt);
  }
  const std::vector<float> got = g16.to_vector(), want = ref.to_vector();
  REQUIRE(got.size() == want.size());
  int64_t diff = 0, changed = 0;
  const std::vector<float> start = as_dtype(random_tensor(gshape, 91), dt).to_vector();
  for (std::size_t i = 0; i < got.size(); ++i) {
    diff += got[i] != want[i];
    changed += got[i] != start[i];
  }
  CHECK(diff == 0);
  CHECK(changed > static_cast<int64_t>(got.size()) / 2);  // the op really wrote
}

}  // namespace

TEST_CASE("cpu backend: 16-bit parameter gradients equal the f32 op rounded (accumulating)", "[cpu][grad16]") {
  auto be = make_cpu_backend();
  for (DType dt : {DType::BF16, DType::F16}) {
    INFO(dtype_name(dt));
    const int64_t N = 37, C = 24, V = 11;
    const Tensor dy = random_tensor({N, C}, 1), x = random_tensor({N, C}, 2), w = random_tensor({C}, 3, 0.5f, 1.5f);
    SECTION("bias_grad") {
      check_accumulating(dt, {C}, [&](Tensor& g) { be->bias_grad(dy, g); });
    }
    SECTION("layernorm_backward dweight and dbias") {
      Tensor y = Tensor::empty({N, C}), mean = Tensor::empty({N}), rstd = Tensor::empty({N});
      be->layernorm_forward(x, w, Tensor::zeros({C}), y, mean, rstd, 1e-5f);
      Tensor dx = Tensor::empty({N, C});
      Tensor other = Tensor::zeros({C});
      check_accumulating(dt, {C}, [&](Tensor& g) { be->layernorm_backward(dy, x, w, mean, rstd, dx, g, other); });
      check_accumulating(dt, {C}, [&](Tensor& g) { be->layernorm_backward(dy, x, w, mean, rstd, dx, other, g); });
    }
    SECTION("embedding_backward dtable (repeated ids)") {
      std::vector<int32_t> ids;
      for (int64_t i = 0; i < N; ++i) ids.push_back(static_cast<int32_t>((i * 7) % V));
      const Tensor tid = Tensor::from_vector_i32({N}, ids);
      check_accumulating(dt, {V, C}, [&](Tensor& g) { be->embedding_backward(tid, dy, g, 0); });
    }
    SECTION("gemm c (weight gradient dW += dy^T x)") {
      check_accumulating(dt, {C, C}, [&](Tensor& g) { be->gemm(true, false, C, C, N, 1.0f, dy, x, 1.0f, g, 1, 0, 0, 0); });
    }
    SECTION("axpy and scale (reductions, clipping)") {
      const Tensor a = random_tensor({N, C}, 5);
      check_accumulating(dt, {N, C}, [&](Tensor& g) { be->axpy(0.75f, a, g); });
      check_accumulating(dt, {N, C}, [&](Tensor& g) { be->scale(g, 0.3f); });
    }
  }
}

TEST_CASE("cpu backend: adamw_step reads a 16-bit gradient as its f32 value", "[cpu][grad16]") {
  auto be = make_cpu_backend();
  for (DType dt : {DType::BF16, DType::F16}) {
    INFO(dtype_name(dt));
    const Shape s{3, 50000};  // more than one parallel chunk
    const Tensor g16 = as_dtype(random_tensor(s, 7), dt);
    const Tensor g32 = Tensor::from_vector(s, g16.to_vector());
    const Tensor master0 = random_tensor(s, 8);
    AdamWParams p;
    p.lr = 1e-2f;
    p.step = 1;
    p.weight_decay = 0.1f;
    p.grad_scale = 0.5f;
    Tensor out[2];
    Tensor mv[2][2];
    for (int k = 0; k < 2; ++k) {
      Tensor value = as_dtype(master0, dt), master = master0.clone();
      mv[k][0] = Tensor::zeros(s);
      mv[k][1] = Tensor::zeros(s);
      for (int step = 1; step <= 2; ++step) {
        p.step = step;
        be->adamw_step(value, k == 0 ? g16 : g32, mv[k][0], mv[k][1], master, p);
      }
      out[k] = master;
    }
    CHECK(bitwise_equal(out[0], out[1]));
    CHECK(bitwise_equal(mv[0][0], mv[1][0]));
    CHECK(bitwise_equal(mv[0][1], mv[1][1]));
  }
}
