#include "pp3d/comm/tcp_communicator.h"

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <tuple>

#include "comm/comm_util.h"

namespace pp3d {

namespace {
TcpStore::Bytes to_bytes(const Tensor& h, int64_t begin = 0, int64_t count = -1) {
  const std::size_t es = dtype_size(h.dtype());
  if (count < 0) count = h.numel() - begin;
  const auto* p = static_cast<const uint8_t*>(h.raw()) + static_cast<std::size_t>(begin) * es;
  return TcpStore::Bytes(p, p + static_cast<std::size_t>(count) * es);
}
void from_bytes(const TcpStore::Bytes& b, Tensor& h, int64_t begin, int64_t count, const std::string& what) {
  const std::size_t need = static_cast<std::size_t>(count) * dtype_size(h.dtype());
  PP3D_CHECK(b.size() == need, "{}: received {} bytes, expected {} ({} x {}): the ranks disagree on the shape",
             what, b.size(), need, count, dtype_name(h.dtype()));
  if (need) std::memcpy(static_cast<uint8_t*>(h.raw()) + static_cast<std::size_t>(begin) * dtype_size(h.dtype()), b.data(), need);
}
std::vector<int> all_but(int rank, int n) {
  std::vector<int> v;
  for (int r = 0; r < n; ++r)
    if (r != rank) v.push_back(r);
  return v;
}
}  // namespace

TcpCommunicator::TcpCommunicator(std::shared_ptr<TcpStore> store, std::string name)
    : store_(std::move(store)), name_(std::move(name)), id_("g") {
  PP3D_CHECK(store_ != nullptr, "TcpCommunicator needs a store");
  rank_ = store_->rank();
  for (int r = 0; r < store_->world_size(); ++r) global_.push_back(r);
}

TcpCommunicator::TcpCommunicator(std::shared_ptr<TcpStore> store, std::string name, std::string id, int rank,
                                 std::vector<int> global)
    : store_(std::move(store)), name_(std::move(name)), id_(std::move(id)), rank_(rank), global_(std::move(global)) {}

int TcpCommunicator::global_rank(int r) const {
  PP3D_CHECK(r >= 0 && r < size(), "group '{}' has {} ranks; rank {} does not exist", name_, size(), r);
  return global_[static_cast<std::size_t>(r)];
}

std::string TcpCommunicator::next_prefix() { return fmt::format("{}/c/{}/", id_, seq_++); }

void TcpCommunicator::wait_peers(const char* op, const std::string& what, const std::vector<std::string>& keys,
                                 const std::vector<int>& owners) {
  if (keys.empty()) return;
  const double timeout = comm_timeout_seconds();
  const auto missing = store_->wait_missing(keys, timeout);
  if (missing.empty()) return;
  std::vector<int> late;
  for (std::size_t i = 0; i < keys.size(); ++i)
    if (std::find(missing.begin(), missing.end(), keys[i]) != missing.end())
      late.push_back(global_[static_cast<std::size_t>(owners[i])]);
  std::sort(late.begin(), late.end());
  late.erase(std::unique(late.begin(), late.end()), late.end());
  detail::mark_comm_failed();
  PP3D_FAIL("{} on group '{}' ({} ranks, {}) did not complete within {} s (PP3D_COMM_TIMEOUT): global rank(s) {} "
            "did not arrive; they have probably died, stalled, or called a different operation",
            op, name_, size(), what, timeout, detail::ranks_str(late));
}

void TcpCommunicator::all_reduce(Tensor& t, ReduceOp op) {
  detail::check_comm_tensor(t, "all_reduce", *this);
  const int n = size();
  if (n == 1) return;
  auto st = detail::stage_reduce(t, true);
  const std::string pre = next_prefix();
  store_->set(pre + std::to_string(rank_), to_bytes(st.host), n - 1);
  std::vector<std::string> keys;
  const auto owners = all_but(rank_, n);
  for (int r : owners) keys.push_back(pre + std::to_string(r));
  const std::string what = fmt::format("{} {}", t.str(), reduce_op_name(op));
  wait_peers("all_reduce", what, keys, owners);
  // Sum in rank order 0..n-1 on every rank: bitwise identical results.
  Tensor acc = Tensor::empty({t.numel()}, st.host.dtype(), Device::cpu(), MemCategory::Comm);
  Tensor part = Tensor::empty({t.numel()}, st.host.dtype(), Device::cpu(), MemCategory::Comm);
  for (int r = 0; r < n; ++r) {
    Tensor& dst = r == 0 ? acc : part;
    if (r == rank_) {
      dst.copy_from(st.host.reshape({t.numel()}));
    } else {
      from_bytes(store_->get(pre + std::to_string(r)), dst, 0, t.numel(), "all_reduce on group '" + name_ + "'");
    }
    if (r > 0) detail::reduce_into(acc, part, op);
  }
  detail::finish_avg(acc, op, n);
  st.host.copy_from(acc.reshape(st.host.shape()));
  detail::unstage_reduce(st, t);
}

void TcpCommunicator::reduce_scatter(const Tensor& in, Tensor& out, ReduceOp op) {
  detail::check_reduce_scatter_args(in, out, *this);
  const int n = size();
  auto sin = detail::stage_reduce(in, true);
  const int64_t m = out.numel();
  const std::string pre = next_prefix();
  for (int d = 0; d < n; ++d)
    if (d != rank_) store_->set(fmt::format("{}{}/{}", pre, rank_, d), to_bytes(sin.host, d * m, m), 1);
  std::vector<std::string> keys;
  const auto owners = all_but(rank_, n);
  for (int r : owners) keys.push_back(fmt::format("{}{}/{}", pre, r, rank_));
  wait_peers("reduce_scatter", fmt::format("{} -> {} {}", in.str(), out.str(), reduce_op_name(op)), keys, owners);
  Tensor acc = Tensor::empty({m}, sin.host.dtype(), Device::cpu(), MemCategory::Comm);
  Tensor part = Tensor::empty({m}, sin.host.dtype(), Device::cpu(), MemCategory::Comm);
  for (int r = 0; r < n; ++r) {
    Tensor& dst = r == 0 ? acc : part;
    if (r == rank_) {
      dst.copy_from(sin.host.reshape({n, m}).slice(rank_, rank_ + 1).reshape({m}));
    } else {
      from_bytes(store_->get(fmt::format("{}{}/{}", pre, r, rank_)), dst, 0, m,
                 "reduce_scatter on group '" + name_ + "'");
    }
    if (r > 0) detail::reduce_into(acc, part, op);
  }
  detail::finish_avg(acc, op, n);
  detail::ReduceStage sout = detail::stage_reduce(out, false);
  sout.host.copy_from(acc.reshape(sout.host.shape()));
  detail::unstage_reduce(sout, out);
}

void TcpCommunicator::all_gather(const Tensor& in, Tensor& out) {
  detail::check_all_gather_args(in, out, *this);
  const int n = size();
  const int64_t m = in.numel();
  const Tensor hin = detail::stage_bytes(in, true).clone(MemCategory::Comm);  // in may alias out
  Tensor hout = detail::stage_bytes(out, false);
  const std::string pre = next_prefix();
  if (n > 1) store_->set(pre + std::to_string(rank_), to_bytes(hin), n - 1);
  std::vector<std::string> keys;
  const auto owners = all_but(rank_, n);
  for (int r : owners) keys.push_back(pre + std::to_string(r));
  wait_peers("all_gather", fmt::format("{} -> {}", in.str(), out.str()), keys, owners);
  for (int r = 0; r < n; ++r) {
    const auto b = r == rank_ ? to_bytes(hin) : store_->get(pre + std::to_string(r));
    from_bytes(b, hout, r * m, m, "all_gather on group '" + name_ + "'");
  }
  detail::unstage_bytes(hout, out);
}

void TcpCommunicator::broadcast(Tensor& t, int root) {
  detail::check_comm_tensor(t, "broadcast", *this);
  detail::check_root(root, "broadcast", *this);
  const std::string key = next_prefix() + std::to_string(root);
  if (size() == 1) return;
  if (rank_ == root) {
    store_->set(key, to_bytes(detail::stage_bytes(t, true)), size() - 1);
    return;
  }
  wait_peers("broadcast", fmt::format("{} from rank {}", t.str(), root), {key}, {root});
  Tensor h = detail::stage_bytes(t, false);
  from_bytes(store_->get(key), h, 0, t.numel(), "broadcast on group '" + name_ + "'");
  detail::unstage_bytes(h, t);
}

void TcpCommunicator::barrier() {
  const int n = size();
  if (n == 1) return;
  const std::string pre = next_prefix();
  store_->set(pre + std::to_string(rank_), std::string("1"), n - 1);
  std::vector<std::string> keys;
  const auto owners = all_but(rank_, n);
  for (int r : owners) keys.push_back(pre + std::to_string(r));
  wait_peers("barrier", "no data", keys, owners);
  for (const auto& k : keys) store_->get(k);  // consume
}

std::string TcpCommunicator::p2p_key(int src, int dst, int tag, int64_t n) const {
  return fmt::format("{}/p/{}/{}/{}/{}", id_, src, dst, tag, n);
}

void TcpCommunicator::send(const Tensor& t, int peer, int tag) {
  detail::check_comm_tensor(t, "send", *this);
  detail::check_peer(peer, "send", *this);
  const int64_t n = sent_[{peer, tag}]++;
  store_->set(p2p_key(rank_, peer, tag, n), to_bytes(detail::stage_bytes(t, true)), 1);
}

void TcpCommunicator::recv(Tensor& t, int peer, int tag) {
  detail::check_comm_tensor(t, "recv", *this);
  detail::check_peer(peer, "recv", *this);
  const int64_t n = received_[{peer, tag}]++;
  const std::string key = p2p_key(peer, rank_, tag, n);
  const double timeout = comm_timeout_seconds();
  if (!store_->wait_missing({key}, timeout).empty()) {
    detail::mark_comm_failed();
    PP3D_FAIL("recv on group '{}' ({} ranks, tag {}, {}) did not complete within {} s (PP3D_COMM_TIMEOUT): peer "
              "global rank {} (rank {} of '{}') did not send; it has probably died, stalled, or posted a "
              "different operation",
              name_, size(), tag, t.str(), timeout, global_rank(peer), peer, name_);
  }
  Tensor h = detail::stage_bytes(t, false);
  from_bytes(store_->get(key), h, 0, t.numel(),
             fmt::format("recv on group '{}' from global rank {} (tag {})", name_, global_rank(peer), tag));
  detail::unstage_bytes(h, t);
}

void TcpCommunicator::batch_send_recv(std::vector<P2POp>& ops) {
  for (auto& o : ops) {
    detail::check_comm_tensor(o.tensor, o.kind == P2POp::Send ? "send" : "recv", *this);
    detail::check_peer(o.peer, o.kind == P2POp::Send ? "send" : "recv", *this);
  }
  // Sends are buffered by the store, so posting them all first cannot deadlock.
  for (auto& o : ops)
    if (o.kind == P2POp::Send) send(o.tensor, o.peer, o.tag);
  for (auto& o : ops)
    if (o.kind == P2POp::Recv) recv(o.tensor, o.peer, o.tag);
}

std::unique_ptr<CommHandle> TcpCommunicator::all_reduce_async(Tensor& t, ReduceOp op, StreamHandle) {
  all_reduce(t, op);
  return std::make_unique<detail::DoneHandle>();
}

std::unique_ptr<CommHandle> TcpCommunicator::reduce_scatter_async(const Tensor& in, Tensor& out, ReduceOp op,
                                                                  StreamHandle) {
  reduce_scatter(in, out, op);
  return std::make_unique<detail::DoneHandle>();
}

std::unique_ptr<CommHandle> TcpCommunicator::all_gather_async(const Tensor& in, Tensor& out, StreamHandle) {
  all_gather(in, out);
  return std::make_unique<detail::DoneHandle>();
}

std::shared_ptr<Communicator> TcpCommunicator::split(int color, int key, const std::string& name) {
  const int n = size();
  const std::string pre = next_prefix();
  const std::string mine = fmt::format("{} {}", color, key);
  if (n > 1) store_->set(pre + std::to_string(rank_), mine, n - 1);
  std::vector<std::string> keys;
  const auto owners = all_but(rank_, n);
  for (int r : owners) keys.push_back(pre + std::to_string(r));
  wait_peers("split", fmt::format("into '{}'", name), keys, owners);
  std::vector<std::tuple<int, int, int>> members;  // (key, rank) of my color
  for (int r = 0; r < n; ++r) {
    std::string s = r == rank_ ? mine : store_->get_string(pre + std::to_string(r));
    int c = 0, k = 0;
    PP3D_CHECK(std::sscanf(s.c_str(), "%d %d", &c, &k) == 2, "split on group '{}': bad entry '{}'", name_, s);
    if (c == color && color >= 0) members.emplace_back(k, r, 0);
  }
  if (color < 0) return nullptr;
  std::sort(members.begin(), members.end());
  std::vector<int> global;
  int my = -1;
  for (std::size_t i = 0; i < members.size(); ++i) {
    const int r = std::get<1>(members[i]);
    if (r == rank_) my = static_cast<int>(i);
    global.push_back(global_[static_cast<std::size_t>(r)]);
  }
  return std::make_shared<TcpCommunicator>(store_, name, fmt::format("{}s{}", pre, color), my,
                                           std::move(global));
}

}  // namespace pp3d
