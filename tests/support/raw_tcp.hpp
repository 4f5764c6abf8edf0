#pragma once
// A raw TCP peer for the tcp provider's tests: plain sockets on loopback that speak the link's
// records by hand, to lie in them or to replay them.

#include "fabric/control_message.hpp"
#include "fabric/tcp/record.hpp"
#include "support/run_until.hpp"

#include <asio/io_context.hpp>

#include <catch2/catch.hpp>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>
#include <algorithm>
#include <cstring>
#include <string>
#include <vector>

namespace bellows::test {

/// A listening socket on loopback at an ephemeral port; the port through `port`.
inline int listen_on_loopback(std::uint16_t& port) {
  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  REQUIRE(fd >= 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  REQUIRE(::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0);
  REQUIRE(::listen(fd, 4) == 0);
  socklen_t length = sizeof addr;
  REQUIRE(::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &length) == 0);
  port = ntohs(addr.sin_port);
  return fd;
}

/// The port of a tcp://HOST:PORT URI.
inline std::uint16_t port_of(const std::string& uri) {
  return static_cast<std::uint16_t>(std::stoi(uri.substr(uri.rfind(':') + 1)));
}

/// A connected, non-blocking socket to 127.0.0.1:`port`.
inline int connect_to_loopback(std::uint16_t port) {
  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  REQUIRE(fd >= 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(port);
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  REQUIRE(::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0);
  return fd;
}

inline void append(std::vector<std::byte>& out, const void* data, std::size_t n) {
  const auto* bytes = static_cast<const std::byte*>(data);
  out.insert(out.end(), bytes, bytes + n);
}

inline void append_control(std::vector<std::byte>& out, const fabric::link_message& m,
                           std::uint64_t length = sizeof(fabric::link_message)) {
  tcp::record_header h;
  h.kind = tcp::record_kind::control;
  h.length = length;
  append(out, &h, sizeof h);
  append(out, &m, std::min<std::size_t>(length, sizeof m));
}

inline fabric::link_message hello_with(std::uint64_t key) {
  fabric::link_message m;
  m.kind = fabric::message_kind::hello;
  m.key = key;
  return m;
}

/// Reads one control record from `fd` while running `io`; false if none came within `limit`.
inline bool read_control(asio::io_context& io, int fd, fabric::link_message& out,
                         std::chrono::milliseconds limit = std::chrono::seconds(5)) {
  std::vector<std::byte> record(sizeof(tcp::record_header) + sizeof(fabric::link_message));
  std::size_t got = 0;
  if (!run_until(
          io,
          [&] {
            const ssize_t n = ::recv(fd, record.data() + got, record.size() - got, MSG_DONTWAIT);
            if (n > 0) got += static_cast<std::size_t>(n);
            return got == record.size() || n == 0;
          },
          limit) ||
      got != record.size())
    return false;
  std::memcpy(&out, record.data() + sizeof(tcp::record_header), sizeof out);
  return true;
}

/// Whether the other end closed `fd` (end of stream or a reset), reading away what came first.
inline bool closed_by_peer(asio::io_context& io, int fd, std::chrono::milliseconds limit = std::chrono::seconds(5)) {
  std::byte sink[4096];
  return run_until(
      io,
      [&] {
        const ssize_t n = ::recv(fd, sink, sizeof sink, MSG_DONTWAIT);
        return n == 0 || (n < 0 && errno == ECONNRESET);
      },
      limit);
}

}  // namespace bellows::test
