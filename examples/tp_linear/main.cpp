// A tensor-parallel MLP in a few lines: y = RowParallel(gelu(ColumnParallel(x))),
// the Megatron MLP, over all ranks of `mpirun -n <tp> pp3d-example-tp-linear`
// (tp must divide 64), with and without sequence parallelism. Every rank
// builds only its shards (layout-independent init), runs forward and
// backward, and compares y, dx and the weight gradients with the serial
// product computed from the full weights. Exit status 0 when they agree.
#include <cmath>
#include <cstdio>
#include <vector>

#include "pp3d/backend/backend.h"
#include "pp3d/comm/bootstrap.h"
#include "pp3d/parallel/tensor_parallel.h"

using namespace pp3d;

namespace {

constexpr int64_t kB = 2, kT = 8, kC = 16, kF = 64;

float max_diff(const Tensor& a, const Tensor& b) {
  const std::vector<float> x = a.to_vector(), y = b.to_vector();
  float m = x.size() == y.size() ? 0.0f : INFINITY;
  for (std::size_t i = 0; i < x.size() && i < y.size(); ++i) m = std::fmax(m, std::fabs(x[i] - y[i]));
  return m;
}

// Runs the MLP forward + backward with group `tp` (nullptr: serial) and returns {y, dx, dW_fc, dW_proj}.
struct Result {
  Tensor y, dx, dfc, dproj;
};
Result run_mlp(Backend& be, Communicator* tp, bool sp, const Tensor& x, const Tensor& dy) {
  const int n = tp_world(tp), r = tp ? tp->rank() : 0;
  const InitSpec normal{InitKind::Normal, 0.0f, 0.2f};
  // 1. Parameters: this rank's shard of fc.weight [F, C] (rows) and proj.weight [C, F] (columns).
  Parameter fc_w = make_sharded_parameter("fc.weight", {kF, kC}, column_parallel_shard(kF, r, n), normal, 42);
  Parameter fc_b = make_sharded_parameter("fc.bias", {kF}, column_parallel_shard(kF, r, n), normal, 42);
  Parameter proj_w = make_sharded_parameter("proj.weight", {kC, kF}, row_parallel_shard(kF, r, n), normal, 42);
  Parameter proj_b = make_sharded_parameter("proj.bias", {kC}, {}, normal, 42);  // replicated
  // 2. Layers: column-parallel fc feeds row-parallel proj without any communication in between.
  const ColumnParallelLinear fc(fc_w, &fc_b, {.gather_output = false, .sequence_parallel = sp});
  const RowParallelLinear proj(proj_w, &proj_b, {.input_is_parallel = true, .sequence_parallel = sp});
  // 3. Forward: x is replicated ([B, T, C]) or, with sequence parallelism, this rank's tokens [B, T/tp, C].
  const Tensor xin = sp ? sequence_split(be, tp, x) : x;
  const Tensor h = fc.forward(be, tp, xin);  // [B, T, F/tp]
  Tensor g = Tensor::empty(h.shape());
  be.gelu_forward(h, g);
  Result res;
  res.y = proj.forward(be, tp, g);  // [B, T, C] (all-reduced) or [B, T/tp, C] (reduce-scattered)
  // 4. Backward.
  const Tensor dyin = sp ? sequence_split(be, tp, dy) : dy;
  const Tensor dg = proj.backward(be, tp, dyin, g);
  Tensor dh = Tensor::empty(h.shape());
  be.gelu_backward(h, dg, dh);
  res.dx = fc.backward(be, tp, dh, xin);
  if (sp) {  // back to the full sequence for the comparison
    res.y = sequence_all_gather(be, tp, res.y);
    res.dx = sequence_all_gather(be, tp, res.dx);
  }
  res.dfc = fc_w.grad;
  res.dproj = proj_w.grad;
  return res;
}

}  // namespace

int main() {
  auto world = init_world();  // MPI under mpirun, a single local rank otherwise
  auto be = make_cpu_backend();
  const int r = world->rank(), n = world->size();
  Tensor x = Tensor::empty({kB, kT, kC}), dy = Tensor::empty({kB, kT, kC});
  x.copy_from(make_initial_values({kB * kT * kC}, {}, {InitKind::Normal, 0.0f, 1.0f}, 7, "x").reshape({kB, kT, kC}));
  dy.copy_from(make_initial_values({kB * kT * kC}, {}, {InitKind::Normal, 0.0f, 1.0f}, 7, "dy").reshape({kB, kT, kC}));
  const Result serial = run_mlp(*be, nullptr, false, x, dy);
  int bad = 0;
  for (bool sp : {false, true}) {
    const Result par = run_mlp(*be, world.get(), sp, x, dy);
    // The serial gradients restricted to this rank's shard.
    const ShardSpec fc_s = column_parallel_shard(kF, r, n), proj_s = row_parallel_shard(kF, r, n);
    Tensor dfc = serial.dfc.slice(fc_s.offset, fc_s.offset + fc_s.length).clone();
    Tensor dproj = Tensor::empty({kC, proj_s.length});
    for (int64_t i = 0; i < kC; ++i)
      for (int64_t j = 0; j < proj_s.length; ++j)
        dproj.data<float>()[i * proj_s.length + j] = serial.dproj.data<float>()[i * kF + proj_s.offset + j];
    const float e = std::fmax(std::fmax(max_diff(par.y, serial.y), max_diff(par.dx, serial.dx)),
                              std::fmax(max_diff(par.dfc, dfc), max_diff(par.dproj, dproj)));
    if (r == 0 || e > 1e-5f)
      std::printf("rank %d tp=%d sequence_parallel=%d: max |parallel - serial| over y, dx, dW = %.3g %s\n", r, n,
                  sp ? 1 : 0, e, e <= 1e-5f ? "OK" : "MISMATCH");
    bad += e > 1e-5f;
  }
  Tensor t = Tensor::from_vector_i32({1}, {bad});
  world->all_reduce(t);
  return t.data<int32_t>()[0] == 0 ? 0 : 1;
}
