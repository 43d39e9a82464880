#include "comm/comm_util.h"

#include <atomic>
#include <cerrno>
#include <cstdlib>

#include <fmt/format.h>
#include <fmt/ranges.h>

namespace pp3d {

double comm_timeout_seconds() {
  const char* names[] = {"PP3D_COMM_TIMEOUT", "NCCL_TIMEOUT"};
  for (const char* name : names) {
    const char* v = std::getenv(name);
    if (v == nullptr || *v == '\0') continue;
    char* end = nullptr;
    errno = 0;
    const double s = std::strtod(v, &end);
    PP3D_CHECK(end != v && *end == '\0' && errno == 0 && s > 0,
               "{}='{}' is not a positive number of seconds (e.g. {}=600)", name, v, name);
    return s;
  }
  return 600.0;
}

const char* reduce_op_name(ReduceOp op) {
  switch (op) {
    case ReduceOp::Sum: return "sum";
    case ReduceOp::Avg: return "avg";
    case ReduceOp::Max: return "max";
  }
  return "?";
}

namespace detail {

std::string ranks_str(const std::vector<int>& ranks) { return fmt::format("[{}]", fmt::join(ranks, ", ")); }

std::vector<int> global_ranks_of(const Communicator& c) {
  std::vector<int> g(static_cast<std::size_t>(c.size()));
  for (int r = 0; r < c.size(); ++r) g[static_cast<std::size_t>(r)] = c.global_rank(r);
  return g;
}

void check_comm_tensor(const Tensor& t, const char* op, const Communicator& c) {
  PP3D_CHECK(t.defined(), "{} on group '{}': the tensor is undefined", op, c.name());
}

void check_reduce_scatter_args(const Tensor& in, const Tensor& out, const Communicator& c) {
  check_comm_tensor(in, "reduce_scatter", c);
  check_comm_tensor(out, "reduce_scatter", c);
  PP3D_CHECK(in.dtype() == out.dtype(), "reduce_scatter on group '{}': input {} and output {} differ in dtype",
             c.name(), in.str(), out.str());
  PP3D_CHECK(in.numel() == out.numel() * c.size(),
             "reduce_scatter on group '{}' ({} ranks): input {} must hold size * output.numel() = {} * {} "
             "elements, has {}",
             c.name(), c.size(), in.str(), c.size(), out.numel(), in.numel());
}

void check_all_gather_args(const Tensor& in, const Tensor& out, const Communicator& c) {
  check_comm_tensor(in, "all_gather", c);
  check_comm_tensor(out, "all_gather", c);
  PP3D_CHECK(in.dtype() == out.dtype(), "all_gather on group '{}': input {} and output {} differ in dtype",
             c.name(), in.str(), out.str());
  PP3D_CHECK(out.numel() == in.numel() * c.size(),
             "all_gather on group '{}' ({} ranks): output {} must hold size * input.numel() = {} * {} "
             "elements, has {}",
             c.name(), c.size(), out.str(), c.size(), in.numel(), out.numel());
}

void check_peer(int peer, const char* op, const Communicator& c) {
  PP3D_CHECK(peer >= 0 && peer < c.size(), "{} on group '{}': peer {} out of range [0, {})", op, c.name(),
             peer, c.size());
  PP3D_CHECK(peer != c.rank(), "{} on group '{}': rank {} cannot {} itself (peer == own rank)", op, c.name(),
             peer, op);
}

void check_root(int root, const char* op, const Communicator& c) {
  PP3D_CHECK(root >= 0 && root < c.size(), "{} on group '{}': root {} out of range [0, {})", op, c.name(),
             root, c.size());
}

ReduceStage stage_reduce(const Tensor& t, bool copy_in) {
  ReduceStage s;
  const DType acc = t.dtype() == DType::I32 ? DType::I32 : DType::F32;
  if (t.device().is_cpu() && t.dtype() == acc) {
    s.host = t;
    return s;
  }
  s.aliased = false;
  s.host = Tensor::empty({t.numel()}, acc, Device::cpu(), MemCategory::Comm);
  if (!copy_in) return s;
  const Tensor src = t.device().is_cpu() ? t : t.to(Device::cpu(), MemCategory::Comm);
  const int64_t n = t.numel();
  float* d = s.host.data<float>();
  if (src.dtype() == DType::BF16) {
    const uint16_t* p = src.data<uint16_t>();
    for (int64_t i = 0; i < n; ++i) d[i] = bf16_to_f32(p[i]);
  } else if (src.dtype() == DType::F16) {
    const uint16_t* p = src.data<uint16_t>();
    for (int64_t i = 0; i < n; ++i) d[i] = f16_to_f32(p[i]);
  } else {
    s.host.copy_from(src.reshape({n}));
  }
  return s;
}

void unstage_reduce(const ReduceStage& s, Tensor& dst) {
  if (s.aliased) return;
  const int64_t n = dst.numel();
  if (dst.dtype() == DType::F32 || dst.dtype() == DType::I32) {
    dst.copy_from(s.host.reshape(dst.shape()));
    return;
  }
  Tensor h = dst.device().is_cpu() ? dst : Tensor::empty(dst.shape(), dst.dtype(), Device::cpu(), MemCategory::Comm);
  const float* p = s.host.data<float>();
  uint16_t* d = h.data<uint16_t>();
  if (dst.dtype() == DType::BF16) {
    for (int64_t i = 0; i < n; ++i) d[i] = f32_to_bf16(p[i]);
  } else {
    for (int64_t i = 0; i < n; ++i) d[i] = f32_to_f16(p[i]);
  }
  if (!dst.device().is_cpu()) dst.copy_from(h);
}

Tensor stage_bytes(const Tensor& t, bool copy_in) {
  if (t.device().is_cpu()) return t;
  if (copy_in) return t.to(Device::cpu(), MemCategory::Comm);
  return Tensor::empty(t.shape(), t.dtype(), Device::cpu(), MemCategory::Comm);
}

void unstage_bytes(const Tensor& host, Tensor& dst) {
  if (dst.device().is_cpu()) return;  // host aliased dst
  dst.copy_from(host);
}

void reduce_into(Tensor& acc, const Tensor& x, ReduceOp op) {
  const int64_t n = acc.numel();
  PP3D_CHECK(x.numel() == n && x.dtype() == acc.dtype(), "reduce_into {} += {}", acc.str(), x.str());
  if (acc.dtype() == DType::I32) {
    int32_t* a = acc.data<int32_t>();
    const int32_t* b = x.data<int32_t>();
    if (op == ReduceOp::Max) {
      for (int64_t i = 0; i < n; ++i) a[i] = a[i] < b[i] ? b[i] : a[i];
    } else {
      for (int64_t i = 0; i < n; ++i) a[i] += b[i];
    }
    return;
  }
  float* a = acc.data<float>();
  const float* b = x.data<float>();
  if (op == ReduceOp::Max) {
    for (int64_t i = 0; i < n; ++i) a[i] = a[i] < b[i] ? b[i] : a[i];
  } else {
    for (int64_t i = 0; i < n; ++i) a[i] += b[i];
  }
}

void finish_avg(Tensor& t, ReduceOp op, int n) {
  if (op != ReduceOp::Avg || n == 1) return;
  const int64_t m = t.numel();
  if (t.dtype() == DType::I32) {
    int32_t* a = t.data<int32_t>();
    for (int64_t i = 0; i < m; ++i) a[i] /= n;
  } else {
    float* a = t.data<float>();
    const float fn = static_cast<float>(n);
    for (int64_t i = 0; i < m; ++i) a[i] /= fn;
  }
}

namespace {
std::atomic<bool> g_comm_failed{false};
}
void mark_comm_failed() { g_comm_failed.store(true); }
bool comm_failed() { return g_comm_failed.load(); }

}  // namespace detail
}  // namespace pp3d
