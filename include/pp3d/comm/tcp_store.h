// TcpStore: a key-value rendezvous over TCP for torchrun-style launches.
//
// Rank 0 runs the server (a background thread listening on `port`; port 0
// picks a free one, see port()); every rank, rank 0 included, talks to it
// through one client connection. Values are bytes (e.g. an NCCL unique id).
// get()/wait() block until the keys exist or the deadline passes; barrier()
// names the ranks that never arrived. The server checks that every rank
// agrees on world_size and that no rank joins twice. Errors (port in use,
// master unreachable after retries until the deadline, timeouts, lost
// server) are pp3d::Error with what to check. Thread-safe (calls are
// serialised on one connection). Rank 0's store must outlive the other
// ranks' use of it: call barrier() before destroying it.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace pp3d {

class TcpStore {
 public:
  using Bytes = std::vector<uint8_t>;

  // rank 0 starts the server on host:port (binds all interfaces), then every
  // rank connects to host:port, retrying until `timeout_s` (default:
  // comm_timeout_seconds()) has passed.
  TcpStore(const std::string& host, int port, int rank, int world_size, double timeout_s = -1);
  ~TcpStore();
  TcpStore(const TcpStore&) = delete;
  TcpStore& operator=(const TcpStore&) = delete;

  int rank() const { return rank_; }
  int world_size() const { return world_size_; }
  // The port actually listened on (useful after port 0).
  int port() const { return port_; }
  double timeout() const { return timeout_s_; }

  // Stores `value`; readers > 0: the key is deleted after that many get()s.
  void set(const std::string& key, const Bytes& value, int readers = 0);
  void set(const std::string& key, const std::string& value, int readers = 0);
  // Waits for the key (deadline: timeout()) and returns its value.
  Bytes get(const std::string& key);
  Bytes get(const std::string& key, double timeout_s);
  std::string get_string(const std::string& key);
  // Waits until all keys exist; on timeout the error lists the missing keys.
  void wait(const std::vector<std::string>& keys);
  void wait(const std::vector<std::string>& keys, double timeout_s);
  // Waits until all keys exist or timeout_s passes; returns the keys still
  // missing (empty: all there). Never throws for a timeout.
  std::vector<std::string> wait_missing(const std::vector<std::string>& keys, double timeout_s);
  // True when all keys exist now (no waiting).
  bool check(const std::vector<std::string>& keys);
  // Atomically adds `delta` to the integer stored at key (absent = 0); returns the new value.
  int64_t add(const std::string& key, int64_t delta);
  // Deletes a key (no error if absent).
  void erase(const std::string& key);
  // All world_size ranks meet; on timeout the error names the missing ranks.
  void barrier();

 private:
  struct Reply;
  Reply request(uint8_t op, const std::vector<std::string>& keys, const Bytes& value, int64_t arg,
                double wait_s);
  void connect_to_server(const std::string& host);

  class Server;
  std::unique_ptr<Server> server_;
  int fd_ = -1;
  std::string host_;
  int port_ = 0;
  int rank_ = 0;
  int world_size_ = 1;
  double timeout_s_ = 600;
  int64_t barrier_gen_ = 0;
  struct Lock;
  std::unique_ptr<Lock> mu_;
};

}  // namespace pp3d
