// A tcp link that carried a large write moves each side's records to a connection of its own
// (src/fabric/tcp/link_directions.cpp): messages in flight while it moves arrive once, in order,
// intact; afterwards each connection carries bytes one way only; a link whose listener is gone
// stays on one connection and carries on; a connecting peer that lies about the move (a bind
// naming no link or coming late, a move without a second connection, an answer only the
// accepting side may give) is refused and costs nothing; and where the link was proven with a
// pre-shared key, only a bind that proves it again is taken.

#include "fabric/tcp/record.hpp"
#include "support/messages.hpp"
#include "support/peers.hpp"
#include "support/provider.hpp"
#include "support/raw_tcp.hpp"
#include "support/run_until.hpp"

#include <bellows/bellows.hpp>

#include <asio/io_context.hpp>

#include <catch2/catch.hpp>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <unistd.h>
#include <algorithm>
#include <cstddef>
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

using namespace std::chrono_literals;
namespace bt = bellows::test;
namespace fabric = bellows::fabric;
using bellows::tcp::record_header;
using bellows::tcp::record_kind;

namespace {

/// glibc's tcp_info stops where the kernel's goes on with its byte counts (linux/tcp.h, which
/// cannot be included beside glibc's header).
struct tcp_info_with_bytes {
  tcp_info base;
  std::uint64_t pacing_rate;
  std::uint64_t max_pacing_rate;
  std::uint64_t bytes_acked;
  std::uint64_t bytes_received;
};
static_assert(offsetof(tcp_info_with_bytes, bytes_received) == 128);

/// This process's end of one connection to or from a listener: the connecting end's own port
/// names the connection, and the bytes this end received, exact once the application read them
/// (what an end sent counts only once acknowledged).
struct connection_end {
  std::uint16_t connection = 0;
  std::uint64_t received = 0;
};

/// This process's ends of the connections to 127.0.0.1:`port` (`connecting`) or accepted on it.
std::vector<connection_end> ends_of(std::uint16_t port, bool connecting) {
  std::vector<connection_end> ends;
  for (const auto& entry : std::filesystem::directory_iterator("/proc/self/fd")) {
    const int fd = std::stoi(entry.path().filename().string());
    sockaddr_in own{}, peer{};
    socklen_t own_length = sizeof own, peer_length = sizeof peer;
    if (::getsockname(fd, reinterpret_cast<sockaddr*>(&own), &own_length) != 0 ||
        ::getpeername(fd, reinterpret_cast<sockaddr*>(&peer), &peer_length) != 0 || peer.sin_family != AF_INET)
      continue;
    if (ntohs((connecting ? peer : own).sin_port) != port) continue;
    tcp_info_with_bytes info{};
    socklen_t info_length = sizeof info;
    // A kernel that does not count bytes reads as no traffic, which the checks below refuse.
    if (::getsockopt(fd, IPPROTO_TCP, TCP_INFO, &info, &info_length) != 0 || info_length != sizeof info) info = {};
    ends.push_back({ntohs((connecting ? own : peer).sin_port), info.bytes_received});
  }
  return ends;
}

std::size_t connections_to(std::uint16_t port) { return ends_of(port, true).size(); }

/// Bytes received by the end of connection `connection` among `ends`; fails the test if none.
std::uint64_t received_on(const std::vector<connection_end>& ends, std::uint16_t connection) {
  const auto it = std::find_if(ends.begin(), ends.end(), [&](const auto& e) { return e.connection == connection; });
  REQUIRE(it != ends.end());
  return it->received;
}

/// Messages one way: all sent at once, received one after another and compared.
struct one_way {
  std::vector<std::vector<std::byte>> messages;
  std::vector<std::byte> buffer = std::vector<std::byte>(1 << 20);
  std::size_t sent = 0;
  std::size_t received = 0;
  std::size_t wrong = 0;
  std::optional<std::error_code> failure;

  one_way(std::initializer_list<std::size_t> sizes, int rounds, unsigned seed) {
    for (int r = 0; r < rounds; ++r)
      for (const std::size_t size : sizes) messages.push_back(bt::random_bytes(size, ++seed));
  }
  bool done() const { return failure || (sent == messages.size() && received == messages.size()); }

  void start(bellows::channel& from, bellows::channel& to) {
    receive_next(to);
    for (auto& m : messages)
      from.async_send(asio::buffer(m), [this](std::error_code ec, std::size_t) {
        if (ec) failure = ec;
        ++sent;
      });
  }
  void receive_next(bellows::channel& to) {
    to.async_receive(asio::buffer(buffer), [this, &to](std::error_code ec, std::size_t n) {
      if (ec) return void(failure = ec);
      const auto& expected = messages[received];
      if (n != expected.size() || !std::equal(expected.begin(), expected.end(), buffer.begin())) ++wrong;
      if (++received < messages.size()) receive_next(to);
    });
  }
};

void exchange(asio::io_context& io, bellows::channel& near, bellows::channel& far, one_way& out, one_way& back) {
  out.start(near, far);
  back.start(far, near);
  REQUIRE(bt::run_until(
      io, [&] { return out.done() && back.done(); }, 30s));
  INFO("out: " << (out.failure ? out.failure->message() : "ok")
               << ", back: " << (back.failure ? back.failure->message() : "ok"));
  REQUIRE(!out.failure);
  REQUIRE(!back.failure);
  CHECK(out.wrong == 0);
  CHECK(back.wrong == 0);
}

}  // namespace

TEST_CASE("tcp: after a large message each side's records take a connection of their own, in order across the move",
          "[tcp]") {
  // With a pre-shared key the second connection proves it too.
  const bool keyed = GENERATE(false, true);
  INFO((keyed ? "with a pre-shared key" : "without a key"));
  const auto uri = bt::uri_for(bt::provider::tcp, bt::unique_name(keyed ? "directions-keyed" : "directions"));
  const auto port = bt::port_of(uri);
  asio::io_context io;
  bellows::channel_options options = bt::options_for(uri);
  if (keyed) options.pre_shared_key = "both ways";
  bellows::acceptor acc(io.get_executor(), uri, options);
  std::optional<bellows::channel> near, far;
  bellows::async_connect(io.get_executor(), uri, options, [&](std::error_code ec, bellows::channel c) {
    if (!ec) near = std::move(c);
  });
  acc.async_accept([&](std::error_code ec, bellows::channel c) {
    if (!ec) far = std::move(c);
  });
  REQUIRE(bt::run_until(
      io, [&] { return near && far; }, 10s));
  const auto at_first = ends_of(port, true);
  REQUIRE(at_first.size() == 1);
  const std::uint16_t first = at_first[0].connection;

  // Both ways at once, small messages between large ones, all queued while the link moves.
  one_way out({200, 1 << 20, 5000, 300'000}, 6, 10);
  one_way back({1 << 20, 64, 300'000, 7000}, 6, 500);
  exchange(io, *near, *far, out, back);
  REQUIRE(bt::run_until(
      io, [&] { return connections_to(port) == 2; }, 5s));
  const auto both = ends_of(port, true);
  const std::uint16_t second = both[0].connection == first ? both[1].connection : both[0].connection;
  // The connecting side moves once the accepting side has bound the second connection and its
  // own queue on the first runs empty; until then its records still go on the first. Bytes on
  // the second beyond the bind record mean it has moved.
  const auto moved = [&] { return received_on(ends_of(port, false), second) > bellows::tcp::bind_record_bytes; };
  for (unsigned round = 0; round < 100 && !moved(); ++round) {
    one_way ping({16}, 1, round), pong({16}, 1, round + 100);
    exchange(io, *near, *far, ping, pong);
  }
  REQUIRE(moved());
  // The accepting side reads the second connection only after `moved` on the first: once it has
  // this message, every byte the connecting side sent on the first is in.
  one_way settle_out({16}, 1, 300), settle_back({16}, 1, 400);
  exchange(io, *near, *far, settle_out, settle_back);

  // From now on the first connection carries only what the accepting side sends, the second
  // only what the connecting side sends (acknowledgements are no bytes here).
  const auto connecting_before = ends_of(port, true), accepting_before = ends_of(port, false);
  one_way more_out({1 << 20, 100, 200'000}, 4, 1000);
  one_way more_back({100, 1 << 20, 200'000}, 4, 2000);
  exchange(io, *near, *far, more_out, more_back);
  const auto connecting_after = ends_of(port, true), accepting_after = ends_of(port, false);
  REQUIRE(connecting_after.size() == 2);
  REQUIRE(accepting_after.size() == 2);
  const auto delta = [](const auto& before, const auto& after, std::uint16_t connection) {
    return received_on(after, connection) - received_on(before, connection);
  };
  constexpr std::uint64_t payload = 4 * ((1 << 20) + 100 + 200'000);
  CHECK(delta(accepting_before, accepting_after, first) == 0);
  CHECK(delta(connecting_before, connecting_after, first) > payload);
  CHECK(delta(accepting_before, accepting_after, second) > payload);
  CHECK(delta(connecting_before, connecting_after, second) == 0);
}

TEST_CASE("tcp: a link whose listener is gone stays on one connection and carries large messages", "[tcp]") {
  const auto uri = bt::uri_for(bt::provider::tcp, bt::unique_name("no-listener"));
  const auto port = bt::port_of(uri);
  asio::io_context io;
  std::optional<bellows::channel> near, far;
  {
    bellows::acceptor acc(io.get_executor(), uri);
    REQUIRE(bt::connect_and_accept(io, acc, uri, near, far));
  }
  one_way out({1 << 20, 300, 600'000}, 3, 20);
  one_way back({600'000, 1 << 20, 40}, 3, 40);
  exchange(io, *near, *far, out, back);
  CHECK(connections_to(port) == 1);
}

namespace {

enum class move_lie { bind_naming_no_link, bind_after_hello, moved_without_second, bound_from_connector, opened_early };

const char* to_string(move_lie l) {
  switch (l) {
    case move_lie::bind_naming_no_link: return "a bind naming no link";
    case move_lie::bind_after_hello: return "a bind on a connection that sent its hello";
    case move_lie::moved_without_second: return "a move without a second connection";
    case move_lie::bound_from_connector: return "second_bound, which only the accepting side sends";
    case move_lie::opened_early: return "second_opened before its hello";
  }
  return "?";
}

void append_bare(std::vector<std::byte>& out, record_kind kind) {
  record_header h;
  h.kind = kind;
  bt::append(out, &h, sizeof h);
}

/// A bind record: the accepting link's key, the connecting link's, and a proof of the key.
void append_bind(std::vector<std::byte>& out, std::uint64_t their_key, std::uint64_t our_key,
                 const fabric::proof& proof = {}) {
  record_header h;
  h.kind = record_kind::bind;
  h.key = their_key;
  h.address = our_key;
  h.length = sizeof proof;
  bt::append(out, &h, sizeof h);
  bt::append(out, proof.data(), proof.size());
}

}  // namespace

TEST_CASE("A tcp connecting peer that lies about moving to a second connection is cut off at no cost", "[tcp][fault]") {
  const auto how = GENERATE(move_lie::bind_naming_no_link, move_lie::bind_after_hello, move_lie::moved_without_second,
                            move_lie::bound_from_connector, move_lie::opened_early);
  INFO("the peer sends " << to_string(how));
  const auto uri = bt::uri_for(bt::provider::tcp, bt::unique_name("move-liar"));
  asio::io_context io;
  bellows::acceptor acc(io.get_executor(), uri);
  bool accepted = false;
  acc.async_accept([&](std::error_code ec, bellows::channel) { accepted = !ec; });

  const int peer = bt::connect_to_loopback(bt::port_of(uri));
  fabric::link_message theirs;
  REQUIRE(bt::read_control(io, peer, theirs));
  REQUIRE(theirs.kind == fabric::message_kind::hello);
  std::vector<std::byte> bytes;
  switch (how) {
    case move_lie::bind_naming_no_link: append_bind(bytes, theirs.key ^ 4, 7); break;
    case move_lie::bind_after_hello:
      bt::append_control(bytes, bt::hello_with(7));
      append_bind(bytes, theirs.key, 7);
      break;
    case move_lie::moved_without_second:
      bt::append_control(bytes, bt::hello_with(7));
      append_bare(bytes, record_kind::moved);
      break;
    case move_lie::bound_from_connector:
      bt::append_control(bytes, bt::hello_with(7));
      append_bare(bytes, record_kind::second_bound);
      break;
    case move_lie::opened_early: append_bare(bytes, record_kind::second_opened); break;
  }
  bt::send_all(peer, bytes);
  CHECK(bt::closed_by_peer(io, peer));
  ::close(peer);
  REQUIRE(bt::run_until(
      io, [&] { return bellows::stats(io).links == 0; }, 5s));
  CHECK_FALSE(accepted);
  CHECK(bellows::stats(io).registered_bytes == 0);
}

TEST_CASE("tcp: a second connection that does not prove a keyed link's key is refused, and the link carries on",
          "[tcp][key][fault]") {
  const std::string key = "second connection's secret";
  const auto uri = bt::uri_for(bt::provider::tcp, bt::unique_name("bind-proof"));
  asio::io_context io;
  bellows::channel_options keyed;
  keyed.pre_shared_key = key;
  bellows::acceptor acc(io.get_executor(), uri, keyed);
  acc.async_accept([](std::error_code, bellows::channel) {});

  // A genuine keyed handshake, by hand, on the first connection.
  constexpr std::uint64_t our_key = 0x7654321;
  const int first = bt::connect_to_loopback(bt::port_of(uri));
  const auto handshake = bt::shake_hands_with_key(io, first, key, our_key);

  // What an eavesdropper could send: both keys, but the handshake's proof, or none.
  std::vector<std::byte> opened;
  append_bare(opened, record_kind::second_opened);
  for (const auto& offered : {fabric::proof{}, handshake.our_proof}) {
    const int second = bt::connect_to_loopback(bt::port_of(uri));
    std::vector<std::byte> bind;
    append_bind(bind, handshake.theirs.key, our_key, offered);
    bt::send_all(second, bind);
    bt::send_all(first, opened);
    CHECK(bt::closed_by_peer(io, second));
    ::close(second);
  }
  REQUIRE(bt::run_until(
      io, [&] { return bellows::stats(io).links == 1; }, 5s));

  // The proof for this connection binds it: the acceptor says so on the first connection.
  const int second = bt::connect_to_loopback(bt::port_of(uri));
  std::vector<std::byte> bind;
  append_bind(bind, handshake.theirs.key, our_key,
              fabric::prove(key, fabric::handshake_role::second_connection, handshake.our_nonce, handshake.their_nonce,
                            our_key, handshake.theirs.key));
  bt::send_all(second, bind);
  bt::send_all(first, opened);
  record_header bound{};
  std::size_t got = 0;
  REQUIRE(bt::run_until(
      io,
      [&] {
        const ssize_t n = ::recv(first, reinterpret_cast<std::byte*>(&bound) + got, sizeof bound - got, MSG_DONTWAIT);
        if (n > 0) got += static_cast<std::size_t>(n);
        return got == sizeof bound;
      },
      5s));
  CHECK(bound.kind == record_kind::second_bound);
  // The connection's own link, which handed its socket over, goes at the end of that round.
  CHECK(bt::run_until(
      io, [&] { return bellows::stats(io).links == 1; }, 5s));
  ::close(second);
  ::close(first);
}
