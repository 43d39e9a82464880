#include "comm/tcp_wire.h"

#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "pp3d/core/error.h"

namespace pp3d::detail::wire {

namespace {
void put_bytes(Bytes& b, const void* p, std::size_t n) {
  if (n == 0) return;
  const std::size_t at = b.size();
  b.resize(at + n);
  std::memcpy(b.data() + at, p, n);
}
template <typename T>
void put(Bytes& b, T v) {
  put_bytes(b, &v, sizeof(T));
}
struct Cursor {
  const uint8_t* p;
  std::size_t n;
  std::size_t at = 0;
  template <typename T>
  T get() {
    PP3D_CHECK(at + sizeof(T) <= n, "TCP store: malformed message ({} bytes, reading at {})", n, at);
    T v;
    std::memcpy(&v, p + at, sizeof(T));
    at += sizeof(T);
    return v;
  }
  const uint8_t* take(std::size_t k) {
    PP3D_CHECK(at + k <= n && at + k >= at, "TCP store: malformed message ({} bytes, {} more at {})", n, k, at);
    const uint8_t* q = p + at;
    at += k;
    return q;
  }
};
Bytes framed(Bytes body) {
  Bytes out;
  out.reserve(body.size() + 8);
  put<uint64_t>(out, body.size());
  put_bytes(out, body.data(), body.size());
  return out;
}
}  // namespace

Bytes encode(const Request& r) {
  Bytes b;
  put<uint8_t>(b, r.op);
  put<int64_t>(b, r.arg);
  put<int64_t>(b, r.wait_ms);
  put<uint32_t>(b, static_cast<uint32_t>(r.keys.size()));
  for (const auto& k : r.keys) {
    put<uint32_t>(b, static_cast<uint32_t>(k.size()));
    put_bytes(b, k.data(), k.size());
  }
  put<uint64_t>(b, r.value.size());
  put_bytes(b, r.value.data(), r.value.size());
  return framed(std::move(b));
}

Bytes encode(const Reply& r) {
  Bytes b;
  put<uint8_t>(b, r.status);
  put<int64_t>(b, r.num);
  put<uint64_t>(b, r.payload.size());
  put_bytes(b, r.payload.data(), r.payload.size());
  return framed(std::move(b));
}

Request decode_request(const uint8_t* p, std::size_t n) {
  Cursor c{p, n};
  Request r;
  r.op = c.get<uint8_t>();
  r.arg = c.get<int64_t>();
  r.wait_ms = c.get<int64_t>();
  const uint32_t nk = c.get<uint32_t>();
  PP3D_CHECK(nk <= n, "TCP store: malformed message ({} keys in {} bytes)", nk, n);
  for (uint32_t i = 0; i < nk; ++i) {
    const uint32_t len = c.get<uint32_t>();
    const uint8_t* k = c.take(len);
    r.keys.emplace_back(reinterpret_cast<const char*>(k), len);
  }
  const uint64_t vlen = c.get<uint64_t>();
  const uint8_t* v = c.take(vlen);
  r.value.assign(v, v + vlen);
  return r;
}

Reply decode_reply(const uint8_t* p, std::size_t n) {
  Cursor c{p, n};
  Reply r;
  r.status = c.get<uint8_t>();
  r.num = c.get<int64_t>();
  const uint64_t len = c.get<uint64_t>();
  const uint8_t* v = c.take(len);
  r.payload.assign(v, v + len);
  return r;
}

namespace {
// Waits for `events` on fd until the deadline; false on timeout.
bool wait_fd(int fd, short events, Clock::time_point deadline) {
  for (;;) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count();
    if (left <= 0) return false;
    pollfd pfd{fd, events, 0};
    const int rc = ::poll(&pfd, 1, static_cast<int>(std::min<int64_t>(left, 1000)));
    if (rc > 0) return true;
    if (rc < 0 && errno != EINTR) return true;  // let the I/O call report the error
  }
}
}  // namespace

bool send_all(int fd, const uint8_t* p, std::size_t n, Clock::time_point deadline, const std::string& what) {
  std::size_t done = 0;
  while (done < n) {
    const ssize_t k = ::send(fd, p + done, n - done, MSG_NOSIGNAL);
    if (k > 0) {
      done += static_cast<std::size_t>(k);
      continue;
    }
    if (k < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) {
      if (!wait_fd(fd, POLLOUT, deadline)) return false;
      continue;
    }
    PP3D_FAIL("{}: send failed: {}", what, errno_str(errno));
  }
  return true;
}

bool recv_all(int fd, uint8_t* p, std::size_t n, Clock::time_point deadline, const std::string& what) {
  std::size_t done = 0;
  while (done < n) {
    const ssize_t k = ::recv(fd, p + done, n - done, 0);
    if (k > 0) {
      done += static_cast<std::size_t>(k);
      continue;
    }
    if (k == 0) PP3D_FAIL("{}: the connection was closed by the other side", what);
    if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) {
      if (!wait_fd(fd, POLLIN, deadline)) return false;
      continue;
    }
    PP3D_FAIL("{}: recv failed: {}", what, errno_str(errno));
  }
  return true;
}

void set_nonblocking(int fd) { ::fcntl(fd, F_SETFL, ::fcntl(fd, F_GETFL, 0) | O_NONBLOCK); }

void set_nodelay(int fd) {
  int one = 1;
  ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
}

std::string errno_str(int err) { return fmt::format("{} (errno {})", std::strerror(err), err); }

}  // namespace pp3d::detail::wire
