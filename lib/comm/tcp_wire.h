// Wire format and socket helpers of the TCP store (internal).
//
// Request:  u64 body_len | u8 op | i64 arg | i64 wait_ms | u32 nkeys | (u32 len, key)* | u64 vlen | value
// Reply:    u64 body_len | u8 status | i64 num | u64 len | payload
// Integers are little-endian host order (all ranks run the same build).
#pragma once

#include <chrono>
#include <cstdint>
#include <string>
#include <vector>

namespace pp3d::detail::wire {

enum Op : uint8_t { kHello = 1, kSet, kGet, kWait, kCheck, kAdd, kErase };
enum Status : uint8_t { kOk = 0, kTimeout = 1, kErr = 2 };

using Clock = std::chrono::steady_clock;
using Bytes = std::vector<uint8_t>;

struct Request {
  uint8_t op = 0;
  int64_t arg = 0;
  int64_t wait_ms = 0;
  std::vector<std::string> keys;
  Bytes value;
};

struct Reply {
  uint8_t status = kOk;
  int64_t num = 0;
  Bytes payload;
};

Bytes encode(const Request& r);
Bytes encode(const Reply& r);
// Parse a body (without the length prefix). Throw pp3d::Error when malformed.
Request decode_request(const uint8_t* p, std::size_t n);
Reply decode_reply(const uint8_t* p, std::size_t n);

// Blocking I/O on a non-blocking socket with a deadline. Return false on
// timeout; throw pp3d::Error (with `what`) when the peer closed or errored.
bool send_all(int fd, const uint8_t* p, std::size_t n, Clock::time_point deadline, const std::string& what);
bool recv_all(int fd, uint8_t* p, std::size_t n, Clock::time_point deadline, const std::string& what);

void set_nonblocking(int fd);
void set_nodelay(int fd);
std::string errno_str(int err);

}  // namespace pp3d::detail::wire
