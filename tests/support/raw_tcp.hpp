#pragma once
// A raw TCP peer for the tcp provider's tests: plain sockets on loopback that speak the link's
// records by hand, to lie in them or to replay them.

#include "fabric/control_message.hpp"
#include "fabric/peer_proof.hpp"
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
#include <string_view>
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

inline void send_all(int fd, const std::vector<std::byte>& bytes) {
  REQUIRE(::send(fd, bytes.data(), bytes.size(), MSG_NOSIGNAL) == static_cast<ssize_t>(bytes.size()));
}

/// A genuine keyed handshake made by hand: what the acceptor said and what we sent, so that a
/// test can replay it or prove more with the same nonces.
struct keyed_handshake {
  fabric::link_message theirs;
  fabric::nonce their_nonce{};
  fabric::nonce our_nonce{};
  fabric::proof our_proof{};
  std::vector<std::byte> sent;  // our hello and proof, as an eavesdropper would record them
};

/// Reads the acceptor's hello on `fd`, answers with a hello demanding proof and the proof of
/// `key` for link key `our_key`, and requires the acceptor's proof back.
inline keyed_handshake shake_hands_with_key(asio::io_context& io, int fd, std::string_view key, std::uint64_t our_key) {
  keyed_handshake made;
  made.our_nonce = fabric::fresh_nonce();
  REQUIRE(read_control(io, fd, made.theirs));
  REQUIRE(made.theirs.kind == fabric::message_kind::hello);
  REQUIRE(made.theirs.second == fabric::hello_demands_proof);
  std::copy(std::begin(made.theirs.nonce), std::end(made.theirs.nonce), made.their_nonce.begin());
  auto hello = hello_with(our_key);
  hello.second = fabric::hello_demands_proof;
  std::copy(made.our_nonce.begin(), made.our_nonce.end(), hello.nonce);
  fabric::link_message proof_message;
  proof_message.kind = fabric::message_kind::key_proof;
  made.our_proof = fabric::prove(key, fabric::handshake_role::connecting, made.our_nonce, made.their_nonce, our_key,
                                 made.theirs.key);
  std::copy(made.our_proof.begin(), made.our_proof.end(), proof_message.mac);
  append_control(made.sent, hello);
  append_control(made.sent, proof_message);
  send_all(fd, made.sent);
  fabric::link_message answer;
  REQUIRE(read_control(io, fd, answer));
  REQUIRE(answer.kind == fabric::message_kind::key_proof);
  return made;
}

}  // namespace bellows::test
