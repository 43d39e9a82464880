// Collective bandwidth, nccl-tests style: for each size (4 KiB .. 16 MiB of f32)
// the mean time per call (max over ranks), algorithm bandwidth = bytes / time and
// bus bandwidth = algbw * factor: all_reduce 2(n-1)/n, reduce_scatter and
// all_gather (n-1)/n (bytes = the full, size * n-sized buffer, as nccl-tests),
// sendrecv (ring: send to r+1, receive from r-1) 1.
// Run: mpirun -n 4 ./collectives_bench [max_bytes]   (or a torchrun-style env, or alone)
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <functional>

#include "pp3d/comm/bootstrap.h"

using namespace pp3d;

namespace {

double time_op(Communicator& c, int iters, const std::function<void()>& op) {
  for (int i = 0; i < 2; ++i) op();  // warm-up
  c.barrier();
  const auto t0 = std::chrono::steady_clock::now();
  for (int i = 0; i < iters; ++i) op();
  double us = std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - t0).count() / iters;
  Tensor t = Tensor::from_vector({1}, {static_cast<float>(us)});
  c.all_reduce(t, ReduceOp::Max);
  return t.data<float>()[0];
}

}  // namespace

int main(int argc, char** argv) {
  auto world = init_world();
  Communicator& c = *world;
  const int n = c.size(), r = c.rank();
  const int64_t max_bytes = argc > 1 ? std::atoll(argv[1]) : 16 << 20;
  if (r == 0) {
    std::printf("# pp3d collectives_bench: %d ranks, communicator %s, f32, time = max over ranks\n", n,
                c.name().c_str());
    std::printf("# %-15s %12s %12s %10s %10s\n", "op", "size(B)", "time(us)", "algbw(GB/s)", "busbw(GB/s)");
  }
  const double nf = n;
  for (int64_t bytes = 4096; bytes <= max_bytes; bytes *= 4) {
    const int64_t elems = bytes / 4;
    const int iters = static_cast<int>(std::clamp<int64_t>((64LL << 20) / bytes, 5, 200));
    auto row = [&](const char* op, double us, double factor) {
      const double algbw = static_cast<double>(bytes) / us / 1e3;  // bytes/us -> GB/s
      if (r == 0) std::printf("  %-15s %12lld %12.1f %10.3f %10.3f\n", op, static_cast<long long>(bytes), us, algbw,
                              algbw * factor);
    };
    Tensor buf = Tensor::zeros({elems});
    row("all_reduce", time_op(c, iters, [&] { c.all_reduce(buf); }), 2 * (nf - 1) / nf);
    if (elems % n == 0) {
      Tensor shard = Tensor::zeros({elems / n});
      row("reduce_scatter", time_op(c, iters, [&] { c.reduce_scatter(buf, shard); }), (nf - 1) / nf);
      row("all_gather", time_op(c, iters, [&] { c.all_gather(shard, buf); }), (nf - 1) / nf);
    }
    if (n > 1) {
      Tensor out = Tensor::zeros({elems});
      std::vector<P2POp> ops{{P2POp::Send, buf, (r + 1) % n, 0}, {P2POp::Recv, out, (r + n - 1) % n, 0}};
      row("sendrecv", time_op(c, iters, [&] { c.batch_send_recv(ops); }), 1.0);
    }
  }
  finalize_world();
  return 0;
}
