#pragma once
// What every tcp link socket is set up with, and the reactor's wake-up: shared by the files
// of the tcp link.

#include <asio/ip/tcp.hpp>

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <unistd.h>
#include <algorithm>
#include <chrono>
#include <climits>
#include <cstdint>

namespace bellows::tcp {

/// Bounds how long a dead peer or link goes unnoticed (context_options::peer_timeout).
inline void limit_silence(asio::ip::tcp::socket& socket, std::chrono::milliseconds timeout) {
  if (timeout.count() <= 0) return;
  const int fd = socket.native_handle();
  const auto seconds = std::max<long long>(1, std::chrono::duration_cast<std::chrono::seconds>(timeout).count());
  const unsigned user_timeout = static_cast<unsigned>(std::min<long long>(seconds * 1000, INT_MAX));
  const int on = 1;
  const int idle = static_cast<int>(std::max<long long>(1, seconds / 2));
  const int interval = static_cast<int>(std::max<long long>(1, seconds / 6));
  // With a user timeout set, the kernel ends a probed connection by it rather than by a count.
  const int probes = 60;
  ::setsockopt(fd, IPPROTO_TCP, TCP_USER_TIMEOUT, &user_timeout, sizeof user_timeout);
  ::setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &on, sizeof on);
  ::setsockopt(fd, IPPROTO_TCP, TCP_KEEPIDLE, &idle, sizeof idle);
  ::setsockopt(fd, IPPROTO_TCP, TCP_KEEPINTVL, &interval, sizeof interval);
  ::setsockopt(fd, IPPROTO_TCP, TCP_KEEPCNT, &probes, sizeof probes);
}

/// Has the reactor poll its links (it may be asleep waiting on `fd`).
inline void wake(int fd) {
  const std::uint64_t one = 1;
  [[maybe_unused]] auto n = ::write(fd, &one, sizeof one);
}

}  // namespace bellows::tcp
