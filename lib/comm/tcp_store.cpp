// TcpStore client: connect with retries, request/reply with deadlines, and the
// composite operations (barrier) built on set/wait.
#include "pp3d/comm/tcp_store.h"

#include <netdb.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <mutex>
#include <thread>

#include "comm/comm_util.h"
#include "comm/tcp_store_server.h"
#include "comm/tcp_wire.h"

namespace pp3d {

using namespace detail::wire;

struct TcpStore::Lock {
  std::mutex m;
};
struct TcpStore::Reply : detail::wire::Reply {};

namespace {
// One non-blocking connect attempt with a bounded wait; returns fd or -1 (err set).
int try_connect(const std::string& host, int port, int max_wait_ms, int& err, std::string& detail_msg) {
  addrinfo hints{};
  hints.ai_family = AF_INET;
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* res = nullptr;
  const int g = ::getaddrinfo(host.c_str(), std::to_string(port).c_str(), &hints, &res);
  if (g != 0) {
    err = 0;
    detail_msg = fmt::format("cannot resolve '{}': {}", host, gai_strerror(g));
    return -1;
  }
  int fd = -1;
  for (addrinfo* a = res; a != nullptr; a = a->ai_next) {
    fd = ::socket(a->ai_family, a->ai_socktype, a->ai_protocol);
    if (fd < 0) continue;
    set_nonblocking(fd);
    int rc = ::connect(fd, a->ai_addr, a->ai_addrlen);
    if (rc != 0 && errno == EINPROGRESS) {
      pollfd pfd{fd, POLLOUT, 0};
      rc = ::poll(&pfd, 1, max_wait_ms) > 0 ? 0 : -1;
      int so = ETIMEDOUT;
      socklen_t len = sizeof(so);
      if (rc == 0) ::getsockopt(fd, SOL_SOCKET, SO_ERROR, &so, &len);
      if (rc != 0 || so != 0) {
        errno = so;
        rc = -1;
      }
    }
    if (rc == 0) break;
    err = errno;
    detail_msg = errno_str(err);
    ::close(fd);
    fd = -1;
  }
  ::freeaddrinfo(res);
  return fd;
}
}  // namespace

TcpStore::TcpStore(const std::string& host, int port, int rank, int world_size, double timeout_s)
    : host_(host), port_(port), rank_(rank), world_size_(world_size), mu_(std::make_unique<Lock>()) {
  timeout_s_ = timeout_s > 0 ? timeout_s : comm_timeout_seconds();
  PP3D_CHECK(world_size >= 1, "TCP store: WORLD_SIZE must be >= 1, got {}", world_size);
  PP3D_CHECK(rank >= 0 && rank < world_size, "TCP store: RANK={} is out of range for WORLD_SIZE={}", rank,
             world_size);
  PP3D_CHECK(port >= 0 && port < 65536, "TCP store: MASTER_PORT={} is not a valid TCP port (1..65535)", port);
  if (rank == 0) {
    server_ = std::make_unique<Server>(port, world_size);
    port_ = server_->port();
  } else {
    PP3D_CHECK(port > 0, "TCP store: rank {} needs the store's port (MASTER_PORT), got 0", rank);
  }
  connect_to_server(rank == 0 ? std::string("127.0.0.1") : host);
}

TcpStore::~TcpStore() {
  if (fd_ >= 0) ::close(fd_);
  server_.reset();
}

void TcpStore::connect_to_server(const std::string& host) {
  const auto t0 = Clock::now();
  const auto deadline = t0 + std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(timeout_s_));
  int attempts = 0, err = 0;
  std::string last;
  int backoff_ms = 50;
  while (true) {
    ++attempts;
    fd_ = try_connect(host, port_, 2000, err, last);
    if (fd_ >= 0) break;
    if (Clock::now() + std::chrono::milliseconds(backoff_ms) >= deadline) {
      PP3D_FAIL("rank {}: could not reach the TCP store (rank 0) at {}:{} (MASTER_ADDR:MASTER_PORT) within {} s "
                "({} attempts; last error: {}): check that rank 0 is running, that every rank has the same "
                "MASTER_ADDR/MASTER_PORT, and that the port is reachable from this host",
                rank_, host, port_, timeout_s_, attempts, last);
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(backoff_ms));
    backoff_ms = std::min(backoff_ms * 2, 1000);
  }
  set_nodelay(fd_);
  Request hello;
  hello.op = kHello;
  hello.arg = rank_;
  hello.wait_ms = world_size_;
  const Bytes b = encode(hello);
  const std::string what = fmt::format("rank {}: TCP store at {}:{}", rank_, host, port_);
  PP3D_CHECK(send_all(fd_, b.data(), b.size(), deadline, what), "{}: handshake timed out", what);
  uint64_t len = 0;
  PP3D_CHECK(recv_all(fd_, reinterpret_cast<uint8_t*>(&len), 8, deadline, what), "{}: handshake timed out", what);
  Bytes body(len);
  PP3D_CHECK(recv_all(fd_, body.data(), len, deadline, what), "{}: handshake timed out", what);
  const auto rep = decode_reply(body.data(), body.size());
  PP3D_CHECK(rep.status == kOk, "{}: {}", what, std::string(rep.payload.begin(), rep.payload.end()));
}

TcpStore::Reply TcpStore::request(uint8_t op, const std::vector<std::string>& keys, const Bytes& value, int64_t arg,
                                  double wait_s) {
  std::lock_guard<std::mutex> lk(mu_->m);
  PP3D_CHECK(fd_ >= 0, "rank {}: the TCP store connection is closed after an earlier error", rank_);
  Request r;
  r.op = op;
  r.arg = arg;
  r.wait_ms = static_cast<int64_t>(wait_s * 1000.0);
  r.keys = keys;
  r.value = value;
  const Bytes b = encode(r);
  const std::string what = fmt::format(
      "rank {}: TCP store at {}:{} (rank 0's process has probably exited, been killed, or become unreachable)",
      rank_, host_, port_);
  // The server answers parked requests itself at wait_s; past that a reply is
  // only late by scheduling and transfer time. A short slack (not timeout_s_,
  // 600 s by default) makes a node cut off from rank 0 fail within the
  // communication timeout + 10 s, like the ranks that wait for it.
  const double slack_s = std::min(timeout_s_, 5.0) + 5.0;
  const auto deadline = Clock::now() + std::chrono::duration_cast<Clock::duration>(
                                           std::chrono::duration<double>(wait_s + slack_s));
  try {
    PP3D_CHECK(send_all(fd_, b.data(), b.size(), deadline, what), "{}: request timed out", what);
    uint64_t len = 0;
    PP3D_CHECK(recv_all(fd_, reinterpret_cast<uint8_t*>(&len), 8, deadline, what), "{}: no reply", what);
    Bytes body(len);
    PP3D_CHECK(recv_all(fd_, body.data(), len, deadline, what), "{}: no reply", what);
    Reply rep;
    static_cast<detail::wire::Reply&>(rep) = decode_reply(body.data(), body.size());
    PP3D_CHECK(rep.status != kErr, "{}: {}", what, std::string(rep.payload.begin(), rep.payload.end()));
    return rep;
  } catch (...) {
    ::close(fd_);  // the stream is out of sync now
    fd_ = -1;
    detail::mark_comm_failed();
    throw;
  }
}

void TcpStore::set(const std::string& key, const Bytes& value, int readers) {
  request(kSet, {key}, value, readers, 0);
}
void TcpStore::set(const std::string& key, const std::string& value, int readers) {
  set(key, Bytes(value.begin(), value.end()), readers);
}

TcpStore::Bytes TcpStore::get(const std::string& key) { return get(key, timeout_s_); }

TcpStore::Bytes TcpStore::get(const std::string& key, double timeout_s) {
  Reply rep = request(kGet, {key}, {}, 0, timeout_s);
  PP3D_CHECK(rep.status == kOk, "rank {}: TCP store get('{}') timed out after {} s: no rank set the key",
             rank_, key, timeout_s);
  return std::move(rep.payload);
}

std::string TcpStore::get_string(const std::string& key) {
  const Bytes b = get(key);
  return std::string(b.begin(), b.end());
}

void TcpStore::wait(const std::vector<std::string>& keys) { wait(keys, timeout_s_); }

void TcpStore::wait(const std::vector<std::string>& keys, double timeout_s) {
  Reply rep = request(kWait, keys, {}, 0, timeout_s);
  if (rep.status == kOk) return;
  std::string missing(rep.payload.begin(), rep.payload.end());
  for (auto& c : missing)
    if (c == '\n') c = ' ';
  detail::mark_comm_failed();
  PP3D_FAIL("rank {}: TCP store wait timed out after {} s; keys never set: {}", rank_, timeout_s, missing);
}

std::vector<std::string> TcpStore::wait_missing(const std::vector<std::string>& keys, double timeout_s) {
  Reply rep = request(kWait, keys, {}, 0, timeout_s);
  std::vector<std::string> missing;
  if (rep.status == kOk) return missing;
  std::string list(rep.payload.begin(), rep.payload.end());
  std::size_t at = 0;
  while (at <= list.size()) {
    std::size_t nl = list.find('\n', at);
    if (nl == std::string::npos) nl = list.size();
    missing.push_back(list.substr(at, nl - at));
    at = nl + 1;
  }
  return missing;
}

bool TcpStore::check(const std::vector<std::string>& keys) { return request(kCheck, keys, {}, 0, 0).num != 0; }

int64_t TcpStore::add(const std::string& key, int64_t delta) { return request(kAdd, {key}, {}, delta, 0).num; }

void TcpStore::erase(const std::string& key) { request(kErase, {key}, {}, 0, 0); }

void TcpStore::barrier() {
  const int64_t gen = barrier_gen_++;
  const std::string prefix = fmt::format("pp3d/barrier/{}/", gen);
  set(prefix + std::to_string(rank_), std::string("1"));
  std::vector<std::string> keys;
  for (int r = 0; r < world_size_; ++r) keys.push_back(prefix + std::to_string(r));
  const auto missing_keys = wait_missing(keys, timeout_s_);
  if (!missing_keys.empty()) {
    std::vector<int> missing;
    for (const auto& k : missing_keys) missing.push_back(std::stoi(k.substr(prefix.size())));
    detail::mark_comm_failed();
    PP3D_FAIL("rank {}: TCP store barrier #{} timed out after {} s: rank(s) {} of {} never arrived (crashed, "
              "stalled, or not launched)",
              rank_, gen, timeout_s_, detail::ranks_str(missing), world_size_);
  }
  // Everyone has passed barrier gen-1 now: its keys can go.
  if (rank_ == 0 && gen > 0) {
    std::vector<std::string> old;
    for (int r = 0; r < world_size_; ++r) old.push_back(fmt::format("pp3d/barrier/{}/{}", gen - 1, r));
    request(kErase, old, {}, 0, 0);
  }
}

}  // namespace pp3d
