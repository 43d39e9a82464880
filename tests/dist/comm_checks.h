// Communicator conformance checks, shared by the MPI programs in tests/dist and
// the in-process TCP unit tests. Every rank can generate every rank's input
// (seeded by rank), so each rank computes the serial answer itself and
// compares. Each check returns "" on success or a description of the failure.
#pragma once

#include <cmath>
#include <algorithm>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include <fmt/format.h>

#include "pp3d/comm/communicator.h"

namespace pp3d::test {

inline std::vector<float> rank_values(int rank, int64_t n, DType dt, uint64_t seed) {
  std::mt19937_64 g(seed * 1000003ULL + static_cast<uint64_t>(rank) * 7919ULL + static_cast<uint64_t>(n));
  std::uniform_real_distribution<float> u(-1.f, 1.f);
  std::uniform_int_distribution<int> ui(-1000, 1000);
  std::vector<float> v(static_cast<std::size_t>(n));
  for (auto& x : v) {
    if (dt == DType::I32) {
      x = static_cast<float>(ui(g));
    } else {
      x = u(g);
      if (dt == DType::BF16) x = bf16_to_f32(f32_to_bf16(x));
      if (dt == DType::F16) x = f16_to_f32(f32_to_f16(x));
    }
  }
  return v;
}

inline Tensor make_tensor(const std::vector<float>& v, DType dt) {
  Tensor t = Tensor::empty({static_cast<int64_t>(v.size())}, dt);
  if (dt == DType::I32) {
    for (std::size_t i = 0; i < v.size(); ++i) t.data<int32_t>()[i] = static_cast<int32_t>(v[i]);
  } else {
    t.fill_from(v);
  }
  return t;
}

// Serial reduction in rank order 0..n-1 (f32 accumulation, i32 exact).
inline std::vector<double> serial_reduce(int n, int64_t len, DType dt, ReduceOp op, uint64_t seed) {
  std::vector<double> acc;
  std::vector<int64_t> iacc;
  for (int r = 0; r < n; ++r) {
    const auto v = rank_values(r, len, dt, seed);
    if (r == 0) {
      acc.assign(v.begin(), v.end());
      iacc.assign(v.size(), 0);
      for (std::size_t i = 0; i < v.size(); ++i) iacc[i] = static_cast<int64_t>(v[i]);
      continue;
    }
    for (std::size_t i = 0; i < v.size(); ++i) {
      if (op == ReduceOp::Max) {
        acc[i] = std::max(acc[i], static_cast<double>(v[i]));
      } else {
        acc[i] += v[i];
        iacc[i] += static_cast<int64_t>(v[i]);
      }
    }
  }
  if (dt == DType::I32 && op != ReduceOp::Max)
    for (std::size_t i = 0; i < acc.size(); ++i)
      acc[i] = static_cast<double>(op == ReduceOp::Avg ? iacc[i] / n : iacc[i]);
  else if (op == ReduceOp::Avg)
    for (auto& x : acc) x /= n;
  return acc;
}

// |got - want| within the rounding of dtype (bf16: 2^-8, f16: 2^-11 relative) plus
// f32 reassociation over n terms of magnitude <= 1.
inline std::string compare(const Tensor& got, const std::vector<double>& want, int n, const std::string& what) {
  const auto g = got.to_vector();
  if (g.size() != want.size()) return fmt::format("{}: size {} != {}", what, g.size(), want.size());
  const DType dt = got.dtype();
  const double rel = dt == DType::BF16 ? 1.0 / 128 : dt == DType::F16 ? 1.0 / 1024 : 0.0;
  for (std::size_t i = 0; i < g.size(); ++i) {
    const double tol = dt == DType::I32 ? 0.0 : rel * std::abs(want[i]) + 2e-6 * n;
    if (!(std::abs(g[i] - want[i]) <= tol))
      return fmt::format("{}: element {} is {}, expected {} (tol {})", what, i, g[i], want[i], tol);
  }
  return "";
}

inline const std::vector<DType>& all_dtypes() {
  static const std::vector<DType> d{DType::F32, DType::BF16, DType::F16, DType::I32};
  return d;
}

// all_reduce (sync and async, every op) and a determinism check (two runs bitwise equal).
inline std::string check_all_reduce(Communicator& c, const std::vector<int64_t>& sizes, uint64_t seed) {
  for (DType dt : all_dtypes())
    for (int64_t len : sizes)
      for (ReduceOp op : {ReduceOp::Sum, ReduceOp::Avg, ReduceOp::Max})
        for (bool async : {false, true}) {
          Tensor t = make_tensor(rank_values(c.rank(), len, dt, seed), dt);
          Tensor t2 = t.clone();
          if (async) {
            auto h = c.all_reduce_async(t, op);
            h->wait();
          } else {
            c.all_reduce(t, op);
          }
          const std::string what = fmt::format("all_reduce{} {} {} n={} on '{}'", async ? "_async" : "",
                                               reduce_op_name(op), dtype_name(dt), len, c.name());
          auto err = compare(t, serial_reduce(c.size(), len, dt, op, seed), c.size(), what);
          if (!err.empty()) return err;
          c.all_reduce(t2, op);
          if (std::memcmp(t.raw(), t2.raw(), t.nbytes()) != 0) return what + ": two runs differ bitwise";
        }
  return "";
}

inline std::string check_reduce_scatter(Communicator& c, const std::vector<int64_t>& sizes, uint64_t seed) {
  const int n = c.size();
  for (DType dt : all_dtypes())
    for (int64_t m : sizes)
      for (ReduceOp op : {ReduceOp::Sum, ReduceOp::Avg, ReduceOp::Max})
        for (bool async : {false, true}) {
          Tensor in = make_tensor(rank_values(c.rank(), n * m, dt, seed), dt);
          Tensor out = Tensor::zeros({m}, dt);
          if (async) {
            c.reduce_scatter_async(in, out, op)->wait();
          } else {
            c.reduce_scatter(in, out, op);
          }
          const auto full = serial_reduce(n, n * m, dt, op, seed);
          const std::vector<double> want(full.begin() + c.rank() * m, full.begin() + (c.rank() + 1) * m);
          auto err = compare(out, want, n, fmt::format("reduce_scatter{} {} {} m={} on '{}'", async ? "_async" : "",
                                                        reduce_op_name(op), dtype_name(dt), m, c.name()));
          if (!err.empty()) return err;
        }
  return "";
}

inline std::string check_all_gather_broadcast(Communicator& c, const std::vector<int64_t>& sizes, uint64_t seed) {
  const int n = c.size();
  for (DType dt : all_dtypes())
    for (int64_t m : sizes)
      for (bool async : {false, true}) {
        Tensor in = make_tensor(rank_values(c.rank(), m, dt, seed), dt);
        Tensor out = Tensor::zeros({n, m}, dt);
        if (async) {
          c.all_gather_async(in, out)->wait();
        } else {
          c.all_gather(in, out);
        }
        for (int r = 0; r < n; ++r) {
          const Tensor expect = make_tensor(rank_values(r, m, dt, seed), dt);
          if (std::memcmp(out.slice(r, r + 1).raw(), expect.raw(), expect.nbytes()) != 0)
            return fmt::format("all_gather {} m={} on '{}': chunk {} wrong", dtype_name(dt), m, c.name(), r);
        }
        for (int root : {0, n - 1}) {
          Tensor t = make_tensor(rank_values(c.rank(), m, dt, seed + 7), dt);
          c.broadcast(t, root);
          const Tensor expect = make_tensor(rank_values(root, m, dt, seed + 7), dt);
          if (std::memcmp(t.raw(), expect.raw(), t.nbytes()) != 0)
            return fmt::format("broadcast {} m={} root {} on '{}': wrong data", dtype_name(dt), m, root, c.name());
        }
      }
  return "";
}

// Ring exchange with send/recv (even ranks send first) and with batch_send_recv
// (two tags each way); needs size() >= 2.
inline std::string check_p2p(Communicator& c, const std::vector<int64_t>& sizes, uint64_t seed) {
  const int n = c.size(), r = c.rank();
  if (n < 2) return "";
  const int next = (r + 1) % n, prev = (r + n - 1) % n;
  for (DType dt : all_dtypes())
    for (int64_t m : sizes) {
      Tensor mine = make_tensor(rank_values(r, m, dt, seed), dt);
      Tensor got = Tensor::zeros({m}, dt);
      if (r % 2 == 0) {
        c.send(mine, next, 3);
        c.recv(got, prev, 3);
      } else {
        c.recv(got, prev, 3);
        c.send(mine, next, 3);
      }
      Tensor expect = make_tensor(rank_values(prev, m, dt, seed), dt);
      if (std::memcmp(got.raw(), expect.raw(), got.nbytes()) != 0)
        return fmt::format("send/recv {} m={} on '{}': wrong data from {}", dtype_name(dt), m, c.name(), prev);
      Tensor a = Tensor::zeros({m}, dt), b = Tensor::zeros({m + 1}, dt);
      Tensor mine_b = make_tensor(rank_values(r, m + 1, dt, seed + 1), dt);
      std::vector<P2POp> ops{{P2POp::Send, mine, next, 1}, {P2POp::Send, mine_b, prev, 2},
                             {P2POp::Recv, a, prev, 1}, {P2POp::Recv, b, next, 2}};
      c.batch_send_recv(ops);
      Tensor ea = make_tensor(rank_values(prev, m, dt, seed), dt);
      Tensor eb = make_tensor(rank_values(next, m + 1, dt, seed + 1), dt);
      if (std::memcmp(a.raw(), ea.raw(), a.nbytes()) != 0 || std::memcmp(b.raw(), eb.raw(), b.nbytes()) != 0)
        return fmt::format("batch_send_recv {} m={} on '{}': wrong data", dtype_name(dt), m, c.name());
    }
  return "";
}

// Splits into even/odd ranks ordered by descending rank and checks membership
// (global ranks all-gathered) and a sum over the subgroup.
inline std::string check_split(Communicator& c) {
  const int n = c.size(), r = c.rank();
  auto sub = c.split(r % 2, -r, fmt::format("parity[{}]", r % 2));
  if (!sub) return "split returned nullptr for a non-negative color";
  std::vector<int> members;
  for (int q = n - 1; q >= 0; --q)
    if (q % 2 == r % 2) members.push_back(q);
  if (sub->size() != static_cast<int>(members.size())) return fmt::format("split: size {} != {}", sub->size(), members.size());
  if (members[static_cast<std::size_t>(sub->rank())] != r) return fmt::format("split: rank {} misplaced", r);
  if (sub->name() != fmt::format("parity[{}]", r % 2)) return "split: wrong name " + sub->name();
  Tensor me = Tensor::from_vector_i32({1}, {c.global_rank(r)});
  Tensor all = Tensor::zeros({sub->size()}, DType::I32);
  sub->all_gather(me, all);
  for (int i = 0; i < sub->size(); ++i) {
    const int want = c.global_rank(members[static_cast<std::size_t>(i)]);
    if (all.data<int32_t>()[i] != want || sub->global_rank(i) != want)
      return fmt::format("split: member {} is global rank {}, expected {}", i, all.data<int32_t>()[i], want);
  }
  auto none = c.split(r == 0 ? -1 : 0, r, "all-but-0");
  if ((r == 0) != (none == nullptr)) return "split: color -1 must give nullptr (and only then)";
  if (none && none->size() != n - 1) return "split: all-but-0 has the wrong size";
  sub->barrier();
  return "";
}

}  // namespace pp3d::test
