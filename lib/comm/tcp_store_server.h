// The TCP store's server (internal): one thread polling the listening socket,
// the client connections and a wake-up pipe; requests that must wait (get,
// wait) are parked with their deadline and answered when the keys appear or
// the deadline passes.
#pragma once

#include <atomic>
#include <list>
#include <map>
#include <set>
#include <string>
#include <thread>

#include "comm/tcp_wire.h"
#include "pp3d/comm/tcp_store.h"

namespace pp3d {

class TcpStore::Server {
 public:
  // Binds and listens on `port` (0 = any free port); throws if in use.
  Server(int port, int world_size);
  ~Server();
  int port() const { return port_; }

 private:
  struct Conn {
    std::vector<uint8_t> in;
    int rank = -1;
  };
  struct Entry {
    detail::wire::Bytes value;
    int readers_left = 0;  // 0 = unlimited
  };
  struct Pending {
    int fd;
    detail::wire::Request req;
    detail::wire::Clock::time_point deadline;
  };

  void run();
  void accept_one();
  bool read_conn(int fd);  // false: connection closed
  void close_conn(int fd);
  // Handles one request; false when it was parked (no reply yet).
  bool handle(int fd, const detail::wire::Request& r);
  bool try_answer(const Pending& p);  // true when answered
  void reply(int fd, const detail::wire::Reply& r);
  void service_pending();

  int listen_fd_ = -1;
  int wake_[2] = {-1, -1};
  int port_ = 0;
  int world_size_ = 1;
  std::atomic<bool> stop_{false};
  std::map<int, Conn> conns_;
  std::map<std::string, Entry> kv_;
  std::list<Pending> pending_;
  std::set<int> ranks_;
  std::thread thread_;
};

}  // namespace pp3d
