// TensorParallelLinear vs a serial double-precision Linear, under mpirun
// (registered with 2 and 4 ranks; the whole world is the TP group):
// ColumnParallelLinear (local columns, gather_output, sequence parallel) and
// RowParallelLinear (parallel input, full input, sequence parallel), forward
// outputs, input gradients and accumulated weight/bias gradients; the
// sequence-parallel region conversions; clear errors for bad shapes.
#include <string>
#include <vector>

#include "parallel/tp_test_util.h"
#include "pp3d/backend/backend.h"
#include "pp3d/comm/bootstrap.h"
#include "pp3d/parallel/tensor_parallel.h"

using namespace pp3d;
using namespace pp3d::tptest;

namespace {

constexpr int64_t kB = 2, kT = 8, kIn = 12, kOut = 16;
constexpr double kAtol = 1e-5, kRtol = 1e-5;

struct Ref {  // the serial layer in double: Y = X W^T + b, dX = dY W, dW = dY^T X, db = sum dY
  std::vector<double> X, W, b, dY, Y, dX, dW, db;
};

Ref reference() {
  Ref r;
  r.X = to_double(random_tensor({kB * kT * kIn}, 1));
  r.W = to_double(make_initial_values({kOut, kIn}, {}, {InitKind::Normal, 0.0f, 0.5f}, 7, "w"));
  r.b = to_double(make_initial_values({kOut}, {}, {InitKind::Normal, 0.0f, 0.5f}, 7, "b"));
  r.dY = to_double(random_tensor({kB * kT * kOut}, 2));
  const int64_t N = kB * kT;
  r.Y.assign(N * kOut, 0.0);
  r.dX.assign(N * kIn, 0.0);
  r.dW.assign(kOut * kIn, 0.0);
  r.db.assign(kOut, 0.0);
  for (int64_t i = 0; i < N; ++i)
    for (int64_t o = 0; o < kOut; ++o) {
      double acc = r.b[o];
      for (int64_t k = 0; k < kIn; ++k) acc += r.X[i * kIn + k] * r.W[o * kIn + k];
      r.Y[i * kOut + o] = acc;
      r.db[o] += r.dY[i * kOut + o];
      for (int64_t k = 0; k < kIn; ++k) {
        r.dX[i * kIn + k] += r.dY[i * kOut + o] * r.W[o * kIn + k];
        r.dW[o * kIn + k] += r.dY[i * kOut + o] * r.X[i * kIn + k];
      }
    }
  return r;
}

// Rows [t0, t0 + Tl) of every sequence and columns [c0, c0 + nc) of a [B, T, cols] array.
std::vector<double> block(const std::vector<double>& v, int64_t cols, int64_t t0, int64_t Tl, int64_t c0, int64_t nc) {
  std::vector<double> out;
  for (int64_t b = 0; b < kB; ++b)
    for (int64_t t = t0; t < t0 + Tl; ++t)
      for (int64_t c = c0; c < c0 + nc; ++c) out.push_back(v[(b * kT + t) * cols + c]);
  return out;
}
// Rows [r0, r0 + nr) and columns [c0, c0 + nc) of a [rows, cols] matrix.
std::vector<double> sub(const std::vector<double>& v, int64_t cols, int64_t r0, int64_t nr, int64_t c0, int64_t nc) {
  std::vector<double> out;
  for (int64_t r = r0; r < r0 + nr; ++r)
    for (int64_t c = c0; c < c0 + nc; ++c) out.push_back(v[r * cols + c]);
  return out;
}
Tensor tensor_of(const Shape& s, const std::vector<double>& v) { return Tensor::from_vector(s, {v.begin(), v.end()}); }

void check_column(Backend& be, Communicator& tp, const Ref& ref, bool gather, bool sp) {
  const int n = tp.size(), r = tp.rank();
  const int64_t ol = kOut / n, Tl = sp ? kT / n : kT, t0 = sp ? r * Tl : 0;
  const std::string tag = fmt::format("column(gather={}, sp={})", gather, sp);
  Parameter w = make_sharded_parameter("w", {kOut, kIn}, column_parallel_shard(kOut, r, n),
                                       {InitKind::Normal, 0.0f, 0.5f}, 7);
  Parameter b = make_sharded_parameter("b", {kOut}, column_parallel_shard(kOut, r, n),
                                       {InitKind::Normal, 0.0f, 0.5f}, 7);
  const ColumnParallelLinear lin(w, &b, {gather, sp});
  const Tensor x = tensor_of({kB, Tl, kIn}, block(ref.X, kIn, t0, Tl, 0, kIn));
  const Tensor y = lin.forward(be, &tp, x);
  const int64_t yc = gather ? kOut : ol;
  TP_EXPECT(y.shape() == (Shape{kB, kT, yc}), "{}: output {}", tag, y.str());
  expect_close(y, block(ref.Y, kOut, 0, kT, gather ? 0 : r * ol, yc), kAtol, kRtol, tag + " y");
  const Tensor dy = tensor_of({kB, kT, yc}, block(ref.dY, kOut, 0, kT, gather ? 0 : r * ol, yc));
  for (int rep = 1; rep <= 2; ++rep) {  // twice: parameter grads accumulate
    const Tensor dx = lin.backward(be, &tp, dy, x);
    TP_EXPECT(dx.shape() == x.shape(), "{}: dx {}", tag, dx.str());
    expect_close(dx, block(ref.dX, kIn, t0, Tl, 0, kIn), kAtol, kRtol, tag + " dx");
    std::vector<double> dw = sub(ref.dW, kIn, r * ol, ol, 0, kIn), db = sub(ref.db, kOut, 0, 1, r * ol, ol);
    for (auto& v : dw) v *= rep;
    for (auto& v : db) v *= rep;
    expect_close(w.grad, dw, kAtol, kRtol, tag + " dW");
    expect_close(b.grad, db, kAtol, kRtol, tag + " db");
  }
  TP_EXPECT(!lin.backward(be, &tp, dy, x, false).defined(), "{}: input_grad=false returned dx", tag);
}

void check_row(Backend& be, Communicator& tp, const Ref& ref, bool parallel_in, bool sp) {
  const int n = tp.size(), r = tp.rank();
  const int64_t il = kIn / n, Tl = sp ? kT / n : kT, t0 = sp ? r * Tl : 0;
  const std::string tag = fmt::format("row(input_is_parallel={}, sp={})", parallel_in, sp);
  Parameter w = make_sharded_parameter("w", {kOut, kIn}, row_parallel_shard(kIn, r, n),
                                       {InitKind::Normal, 0.0f, 0.5f}, 7);
  Parameter b = make_sharded_parameter("b", {kOut}, {}, {InitKind::Normal, 0.0f, 0.5f}, 7);
  const RowParallelLinear lin(w, &b, {parallel_in, sp});
  const Tensor x = parallel_in ? tensor_of({kB, kT, il}, block(ref.X, kIn, 0, kT, r * il, il))
                               : tensor_of({kB, kT, kIn}, ref.X);
  const Tensor y = lin.forward(be, &tp, x);
  TP_EXPECT(y.shape() == (Shape{kB, Tl, kOut}), "{}: output {}", tag, y.str());
  expect_close(y, block(ref.Y, kOut, t0, Tl, 0, kOut), kAtol, kRtol, tag + " y");
  const Tensor dy = tensor_of({kB, Tl, kOut}, block(ref.dY, kOut, t0, Tl, 0, kOut));
  const Tensor dx = lin.backward(be, &tp, dy, x);
  TP_EXPECT(dx.shape() == x.shape(), "{}: dx {}", tag, dx.str());
  expect_close(dx, parallel_in ? block(ref.dX, kIn, 0, kT, r * il, il) : ref.dX, kAtol, kRtol, tag + " dx");
  expect_close(w.grad, sub(ref.dW, kIn, 0, kOut, r * il, il), kAtol, kRtol, tag + " dW");
  expect_close(b.grad, ref.db, kAtol, kRtol, tag + " db (complete on every rank)");
}

void check_regions(Backend& be, Communicator& tp, const Ref& ref) {
  const int n = tp.size(), r = tp.rank();
  const int64_t Tl = kT / n;
  const Tensor X = tensor_of({kB, kT, kIn}, ref.X);
  const Tensor part = sequence_split(be, &tp, X);
  expect_close(part, block(ref.X, kIn, r * Tl, Tl, 0, kIn), 0, 0, "sequence_split");
  expect_close(sequence_all_gather(be, &tp, part), ref.X, 0, 0, "sequence_all_gather(split(X)) == X");
  Tensor scaled = X.clone();
  be.scale(scaled, static_cast<float>(r + 1));
  const Tensor rs = sequence_reduce_scatter(be, &tp, scaled);
  std::vector<double> want = block(ref.X, kIn, r * Tl, Tl, 0, kIn);
  for (auto& v : want) v *= n * (n + 1) / 2.0;
  expect_close(rs, want, 1e-6, 1e-6, "sequence_reduce_scatter(sum_r (r+1) X)");
}

void check_errors(Backend& be, Communicator& tp) {
  const int n = tp.size(), r = tp.rank();
  auto throws_with = [](auto&& f, const std::string& needle, const char* what) {
    try {
      f();
      TP_EXPECT(false, "{}: no error", what);
    } catch (const Error& e) {
      TP_EXPECT(std::string(e.what()).find(needle) != std::string::npos, "{}: message '{}'", what, e.what());
    }
  };
  const Tensor odd = Tensor::zeros({kB, kT * n + 1, kIn});  // T not divisible by tp (local check, no comm)
  throws_with([&] { sequence_split(be, &tp, odd); }, "not divisible by the tensor-parallel size", "split odd T");
  throws_with([&] { sequence_reduce_scatter(be, &tp, odd); }, "not divisible", "reduce-scatter odd T");
  Parameter w = make_sharded_parameter("w", {kOut, kIn}, column_parallel_shard(kOut, r, n), {}, 1);
  const ColumnParallelLinear col(w, nullptr);
  throws_with([&] { col.forward(be, &tp, Tensor::zeros({3, kIn + 1})); }, "input must be [..., 12]", "bad in");
  throws_with([&] { column_parallel_shard(10, 0, 4, 3); }, "do not split", "column shard");
  Parameter wr = make_sharded_parameter("wr", {kOut, kIn}, row_parallel_shard(kIn, r, n), {}, 1);
  throws_with([&] { RowParallelLinear(wr, nullptr, {false, true}); }, "needs input_is_parallel", "row sp");
}

}  // namespace

int main() {
  auto world = init_world();
  auto be = make_cpu_backend();
  try {
    const Ref ref = reference();
    for (bool sp : {false, true}) {
      for (bool gather : {false, true}) check_column(*be, *world, ref, gather, sp);
      check_row(*be, *world, ref, true, sp);
    }
    check_row(*be, *world, ref, false, false);
    check_regions(*be, *world, ref);
    check_errors(*be, *world);
  } catch (const std::exception& e) {
    failures().push_back(std::string("exception: ") + e.what());
  }
  return finish(*world, "tp_linear_test");
}
