#include "comm/tcp_store_server.h"

#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "pp3d/core/error.h"
#include "pp3d/core/log.h"

namespace pp3d {

using namespace detail::wire;

TcpStore::Server::Server(int port, int world_size) : world_size_(world_size) {
  listen_fd_ = ::socket(AF_INET, SOCK_STREAM, 0);
  PP3D_CHECK(listen_fd_ >= 0, "TCP store: socket() failed: {}", errno_str(errno));
  int one = 1;
  ::setsockopt(listen_fd_, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_ANY);
  addr.sin_port = htons(static_cast<uint16_t>(port));
  if (::bind(listen_fd_, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
    const int err = errno;
    ::close(listen_fd_);
    PP3D_CHECK(err != EADDRINUSE,
               "TCP store (rank 0): MASTER_PORT {} is already in use on this host (another job, or a previous run "
               "still holding it): choose a free port, e.g. export MASTER_PORT={}",
               port, port + 1);
    PP3D_FAIL("TCP store (rank 0): cannot bind port {}: {}", port, errno_str(err));
  }
  PP3D_CHECK(::listen(listen_fd_, 1024) == 0, "TCP store: listen() on port {} failed: {}", port, errno_str(errno));
  socklen_t len = sizeof(addr);
  ::getsockname(listen_fd_, reinterpret_cast<sockaddr*>(&addr), &len);
  port_ = ntohs(addr.sin_port);
  PP3D_CHECK(::pipe(wake_) == 0, "TCP store: pipe() failed: {}", errno_str(errno));
  set_nonblocking(listen_fd_);
  thread_ = std::thread([this] { run(); });
}

TcpStore::Server::~Server() {
  stop_.store(true);
  const char c = 'x';
  (void)!::write(wake_[1], &c, 1);
  if (thread_.joinable()) thread_.join();
  for (auto& [fd, conn] : conns_) ::close(fd);
  ::close(listen_fd_);
  ::close(wake_[0]);
  ::close(wake_[1]);
}

void TcpStore::Server::run() {
  std::vector<pollfd> fds;
  while (!stop_.load()) {
    fds.clear();
    fds.push_back({wake_[0], POLLIN, 0});
    fds.push_back({listen_fd_, POLLIN, 0});
    for (auto& [fd, conn] : conns_) fds.push_back({fd, POLLIN, 0});
    int wait_ms = 1000;
    const auto now = Clock::now();
    for (const auto& p : pending_) {
      const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(p.deadline - now).count() + 1;
      wait_ms = static_cast<int>(std::max<int64_t>(0, std::min<int64_t>(wait_ms, left)));
    }
    const int rc = ::poll(fds.data(), fds.size(), wait_ms);
    if (rc < 0 && errno != EINTR) break;
    if (stop_.load()) break;
    try {
      if (fds[1].revents & POLLIN) accept_one();
      for (std::size_t i = 2; i < fds.size(); ++i) {
        if (fds[i].revents == 0) continue;
        if (!read_conn(fds[i].fd)) close_conn(fds[i].fd);
      }
      service_pending();
    } catch (const std::exception& e) {
      logger()->error("TCP store server: {}", e.what());
    }
  }
}

void TcpStore::Server::accept_one() {
  for (;;) {
    const int fd = ::accept(listen_fd_, nullptr, nullptr);
    if (fd < 0) return;
    set_nonblocking(fd);
    set_nodelay(fd);
    conns_[fd] = Conn{};
  }
}

void TcpStore::Server::close_conn(int fd) {
  auto it = conns_.find(fd);
  if (it == conns_.end()) return;
  if (it->second.rank >= 0) ranks_.erase(it->second.rank);
  pending_.remove_if([fd](const Pending& p) { return p.fd == fd; });
  ::close(fd);
  conns_.erase(it);
}

bool TcpStore::Server::read_conn(int fd) {
  Conn& c = conns_[fd];
  uint8_t buf[65536];
  for (;;) {
    const ssize_t k = ::recv(fd, buf, sizeof(buf), 0);
    if (k > 0) {
      c.in.insert(c.in.end(), buf, buf + k);
      continue;
    }
    if (k == 0) return false;
    if (errno == EAGAIN || errno == EWOULDBLOCK) break;
    if (errno == EINTR) continue;
    return false;
  }
  std::size_t at = 0;
  while (c.in.size() - at >= 8) {
    uint64_t len = 0;
    std::memcpy(&len, c.in.data() + at, 8);
    if (c.in.size() - at - 8 < len) break;
    Request r = decode_request(c.in.data() + at + 8, len);
    at += 8 + len;
    handle(fd, r);
    if (conns_.find(fd) == conns_.end()) return true;  // closed while handling
  }
  Conn& c2 = conns_[fd];
  c2.in.erase(c2.in.begin(), c2.in.begin() + static_cast<std::ptrdiff_t>(at));
  return true;
}

void TcpStore::Server::reply(int fd, const detail::wire::Reply& r) {
  const Bytes b = encode(r);
  try {
    if (!send_all(fd, b.data(), b.size(), Clock::now() + std::chrono::seconds(60), "TCP store reply")) {
      logger()->warn("TCP store server: a client did not read its reply for 60 s; dropping it");
      close_conn(fd);
    }
  } catch (const std::exception&) {
    close_conn(fd);
  }
}

static Bytes to_bytes(const std::string& s) { return Bytes(s.begin(), s.end()); }

bool TcpStore::Server::handle(int fd, const Request& r) {
  switch (r.op) {
    case kHello: {
      const int rank = static_cast<int>(r.arg);
      const int64_t ws = r.wait_ms;
      std::string err;
      if (ws != world_size_) {
        err = fmt::format("rank {} has WORLD_SIZE={} but rank 0 (the store) has WORLD_SIZE={}: every rank must "
                          "be launched with the same WORLD_SIZE",
                          rank, ws, world_size_);
      } else if (rank < 0 || rank >= world_size_) {
        err = fmt::format("RANK={} is out of range for WORLD_SIZE={}", rank, world_size_);
      } else if (ranks_.count(rank)) {
        err = fmt::format("rank {} joined the store twice: two processes were launched with RANK={}", rank, rank);
      }
      if (!err.empty()) {
        reply(fd, {kErr, 0, to_bytes(err)});
        return true;
      }
      ranks_.insert(rank);
      conns_[fd].rank = rank;
      reply(fd, {kOk, 0, {}});
      return true;
    }
    case kSet: {
      PP3D_CHECK(r.keys.size() == 1, "TCP store: set with {} keys", r.keys.size());
      kv_[r.keys[0]] = Entry{r.value, static_cast<int>(r.arg)};
      reply(fd, {kOk, 0, {}});
      return true;
    }
    case kAdd: {
      PP3D_CHECK(r.keys.size() == 1, "TCP store: add with {} keys", r.keys.size());
      Entry& e = kv_[r.keys[0]];
      int64_t v = e.value.empty() ? 0 : std::stoll(std::string(e.value.begin(), e.value.end()));
      v += r.arg;
      e.value = to_bytes(std::to_string(v));
      reply(fd, {kOk, v, {}});
      return true;
    }
    case kErase:
      for (const auto& k : r.keys) kv_.erase(k);
      reply(fd, {kOk, 0, {}});
      return true;
    case kCheck: {
      bool all = true;
      for (const auto& k : r.keys) all = all && kv_.count(k) > 0;
      reply(fd, {kOk, all ? 1 : 0, {}});
      return true;
    }
    case kGet:
    case kWait: {
      Pending p{fd, r, Clock::now() + std::chrono::milliseconds(r.wait_ms)};
      if (try_answer(p)) return true;
      pending_.push_back(std::move(p));
      return false;
    }
    default:
      reply(fd, {kErr, 0, to_bytes(fmt::format("unknown TCP store operation {}", r.op))});
      return true;
  }
}

bool TcpStore::Server::try_answer(const Pending& p) {
  std::vector<std::string> missing;
  for (const auto& k : p.req.keys)
    if (!kv_.count(k)) missing.push_back(k);
  if (missing.empty()) {
    if (p.req.op == kGet) {
      auto it = kv_.find(p.req.keys.at(0));
      detail::wire::Reply rep{kOk, 0, it->second.value};
      if (it->second.readers_left > 0 && --it->second.readers_left == 0) kv_.erase(it);
      reply(p.fd, rep);
    } else {
      reply(p.fd, {kOk, 0, {}});
    }
    return true;
  }
  if (Clock::now() < p.deadline) return false;
  std::string list;
  for (const auto& k : missing) list += (list.empty() ? "" : "\n") + k;
  reply(p.fd, {kTimeout, 0, to_bytes(list)});
  return true;
}

void TcpStore::Server::service_pending() {
  // A reply may close a connection and erase its pending entries: iterate on a copy.
  std::list<Pending> todo;
  todo.swap(pending_);
  for (auto& p : todo) {
    if (conns_.find(p.fd) == conns_.end()) continue;
    if (!try_answer(p)) pending_.push_back(std::move(p));
  }
}

}  // namespace pp3d
