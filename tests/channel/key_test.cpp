// tcp and rdma peers that must prove they hold the pre-shared key: the right key sets a channel
// up; a wrong one, none, or one the acceptor does not expect is refused with
// authentication_failed, hands the acceptor nothing and leaves it no registered memory; a
// recorded handshake replayed on a new connection is refused (over rdma:
// tests/verbs/key_and_fence_test.cpp); an acceptor reopened with another key takes no channel
// over a link proven with the old one. Each side runs its own io_context, so that each
// reactor's registered memory is its own.

#include "fabric/control_message.hpp"
#include "support/processes.hpp"
#include "support/provider.hpp"
#include "support/raw_tcp.hpp"

#include <bellows/bellows.hpp>

#include <asio/io_context.hpp>

#include <catch2/catch.hpp>

#include <optional>
#include <string>

using namespace std::chrono_literals;
namespace bt = bellows::test;
namespace fabric = bellows::fabric;

namespace {

/// Runs both contexts until `done()` holds or `limit` passes; true if it held.
template <class Done>
bool run_both(asio::io_context& a, asio::io_context& b, Done done, std::chrono::milliseconds limit = 5s) {
  const auto deadline = std::chrono::steady_clock::now() + limit;
  while (!done() && std::chrono::steady_clock::now() < deadline) {
    for (auto* io : {&a, &b}) {
      io->restart();
      io->run_for(1ms);
    }
  }
  return done();
}

bellows::channel_options keyed(std::string key) {
  bellows::channel_options o;
  o.pre_shared_key = std::move(key);
  return o;
}

/// The providers that carry a pre-shared key; shm checks the peer's uid instead.
std::vector<bt::provider> keyed_providers() {
  std::vector<bt::provider> keyed;
  for (auto p : bt::providers_here())
    if (p != bt::provider::shm) keyed.push_back(p);
  return keyed;
}

}  // namespace

TEST_CASE("Ends that hold the same pre-shared key set up a channel that carries messages", "[tcp][key]") {
  if (keyed_providers().empty()) return bt::skip_case("neither tcp nor rdma is among BELLOWS_TEST_PROVIDERS");
  const auto p = GENERATE(from_range(keyed_providers()));
  INFO("over " << bt::to_string(p));
  const auto uri = bt::uri_for(p, bt::unique_name("key-right"));
  asio::io_context server_io, client_io;
  bellows::acceptor acc(server_io.get_executor(), uri, keyed("the same secret"));
  std::optional<bellows::channel> accepted, connected;
  acc.async_accept([&](std::error_code ec, bellows::channel ch) {
    REQUIRE(!ec);
    accepted = std::move(ch);
  });
  bellows::async_connect(client_io.get_executor(), uri, keyed("the same secret"),
                         [&](std::error_code ec, bellows::channel ch) {
                           INFO("connect: " << ec.message());
                           REQUIRE(!ec);
                           connected = std::move(ch);
                         });
  REQUIRE(run_both(server_io, client_io, [&] { return accepted && connected; }));

  const std::string hello = "proven";
  std::string got(64, '\0');
  std::optional<std::size_t> received;
  connected->async_send(asio::buffer(hello), [](std::error_code ec, std::size_t) { REQUIRE(!ec); });
  accepted->async_receive(asio::buffer(got), [&](std::error_code ec, std::size_t n) {
    REQUIRE(!ec);
    received = n;
  });
  REQUIRE(run_both(server_io, client_io, [&] { return received.has_value(); }));
  CHECK(got.substr(0, *received) == hello);
}

TEST_CASE("A wrong, missing or unexpected pre-shared key is refused with authentication_failed, at no cost",
          "[tcp][key][fault]") {
  if (keyed_providers().empty()) return bt::skip_case("neither tcp nor rdma is among BELLOWS_TEST_PROVIDERS");
  const auto p = GENERATE(from_range(keyed_providers()));
  struct keys {
    const char* acceptor;
    const char* connector;
    const char* what;
  };
  const auto k = GENERATE(keys{"secret", "guess", "a wrong key"}, keys{"secret", "", "no key where one is demanded"},
                          keys{"", "secret", "a key the acceptor does not expect"});
  INFO("over " << bt::to_string(p) << ", the connector offers " << k.what);
  const auto uri = bt::uri_for(p, bt::unique_name("key-wrong"));
  asio::io_context server_io, client_io;
  bellows::acceptor acc(server_io.get_executor(), uri, keyed(k.acceptor));
  bool accepted = false;
  acc.async_accept([&](std::error_code ec, bellows::channel) { accepted = !ec; });
  std::optional<std::error_code> refused;
  bellows::async_connect(client_io.get_executor(), uri, keyed(k.connector),
                         [&](std::error_code ec, bellows::channel) { refused = ec; });
  REQUIRE(run_both(server_io, client_io, [&] { return refused.has_value(); }));
  INFO("the connect ended with " << refused->message());
  CHECK(*refused == bellows::error::authentication_failed);

  // The acceptor handed nothing over, kept no memory and let the connection go ...
  REQUIRE(run_both(server_io, client_io,
                   [&] { return bellows::stats(server_io).links == 0 && bellows::stats(client_io).links == 0; }));
  CHECK_FALSE(accepted);
  CHECK(bellows::stats(server_io).registered_bytes == 0);
  // (An rdma opener registered its first ring before it connected; the pool keeps it
  // registered for the next channel, as after any channel, so only tcp's count is zero here.)
  if (p == bt::provider::tcp) CHECK(bellows::stats(client_io).registered_bytes == 0);

  // ... and still accepts a peer that holds its key.
  std::optional<bellows::channel> connected;
  bellows::async_connect(client_io.get_executor(), uri, keyed(k.acceptor),
                         [&](std::error_code ec, bellows::channel ch) {
                           INFO("the second connect: " << ec.message());
                           REQUIRE(!ec);
                           connected = std::move(ch);
                         });
  REQUIRE(run_both(server_io, client_io, [&] { return connected && accepted; }));
}

TEST_CASE("tcp: a recorded key handshake replayed on a new connection is refused", "[tcp][key][fault]") {
  const std::string key = "recorded secret";
  const auto uri = bt::uri_for(bt::provider::tcp, bt::unique_name("key-replay"));
  asio::io_context io;
  bellows::acceptor acc(io.get_executor(), uri, keyed(key));
  bool accepted = false;
  acc.async_accept([&](std::error_code ec, bellows::channel) { accepted = !ec; });

  // A genuine handshake, as an eavesdropper would record it: our hello and proof for the
  // acceptor's nonce. The acceptor answers with a proof of its own, so it took ours.
  const int first = bt::connect_to_loopback(bt::port_of(uri));
  const auto recorded = bt::shake_hands_with_key(io, first, key, 0x1234567);
  ::close(first);

  // The same bytes on a new connection: the acceptor's nonce is new, the recorded proof is not.
  const int second = bt::connect_to_loopback(bt::port_of(uri));
  fabric::link_message fresh;
  REQUIRE(bt::read_control(io, second, fresh));
  CHECK_FALSE(std::equal(std::begin(fresh.nonce), std::end(fresh.nonce), recorded.their_nonce.begin()));
  bt::send_all(second, recorded.sent);
  CHECK(bt::closed_by_peer(io, second));
  ::close(second);
  REQUIRE(bt::run_until(
      io, [&] { return bellows::stats(io).links == 0; }, 5s));
  CHECK_FALSE(accepted);
  CHECK(bellows::stats(io).registered_bytes == 0);
}

TEST_CASE("A pre-shared key over shm is left to the uid check", "[key]") {
  if (!bt::chosen(bt::provider::shm)) return bt::skip_case("shm is not among BELLOWS_TEST_PROVIDERS");
  const auto uri = bt::uri_for(bt::provider::shm, bt::unique_name("key-elsewhere"));
  asio::io_context io;
  std::error_code listening;
  bellows::acceptor acc(io.get_executor(), uri, keyed("acceptor's"), listening);
  CHECK_FALSE(listening);
  std::optional<std::error_code> connect;
  bellows::async_connect(io.get_executor(), uri, keyed("connector's"),
                         [&](std::error_code ec, bellows::channel) { connect = ec; });
  std::optional<std::error_code> accept;
  acc.async_accept([&](std::error_code ec, bellows::channel) { accept = ec; });
  REQUIRE(bt::run_until(
      io, [&] { return connect && accept; }, 5s));
  CHECK_FALSE(*connect);
}

TEST_CASE("tcp: an acceptor reopened with another key takes no channel over a link proven with the old one",
          "[tcp][key][fault]") {
  // The connecting side reuses its link to the address, proven with the old key, while the
  // first pair's channel keeps it open. The new acceptor demands another key, so that link's
  // opens must not reach it; a connect with the new key gets a link of its own.
  if (!bt::chosen(bt::provider::tcp)) return bt::skip_case("tcp is not among BELLOWS_TEST_PROVIDERS");
  const auto uri = bt::uri_for(bt::provider::tcp, bt::unique_name("key-reopened"));
  asio::io_context server_io, client_io;
  std::optional<bellows::channel> first_accepted, first_connected;
  {
    bellows::acceptor first(server_io.get_executor(), uri, keyed("old secret"));
    first.async_accept([&](std::error_code ec, bellows::channel ch) {
      if (!ec) first_accepted = std::move(ch);
    });
    bellows::async_connect(client_io.get_executor(), uri, keyed("old secret"),
                           [&](std::error_code ec, bellows::channel ch) {
                             if (!ec) first_connected = std::move(ch);
                           });
    REQUIRE(run_both(server_io, client_io, [&] { return first_accepted && first_connected; }));
  }

  bellows::acceptor second(server_io.get_executor(), uri, keyed("new secret"));
  bool accepted = false;
  second.async_accept([&](std::error_code ec, bellows::channel) { accepted = !ec; });
  std::optional<std::error_code> old_key;
  bellows::async_connect(client_io.get_executor(), uri, keyed("old secret"),
                         [&](std::error_code ec, bellows::channel) { old_key = ec; });
  REQUIRE(run_both(server_io, client_io, [&] { return old_key.has_value(); }));
  INFO("the old key's connect ended with " << old_key->message());
  CHECK(*old_key == std::errc::connection_refused);
  CHECK_FALSE(accepted);

  std::optional<std::error_code> new_key;
  bellows::async_connect(client_io.get_executor(), uri, keyed("new secret"),
                         [&](std::error_code ec, bellows::channel) { new_key = ec; });
  REQUIRE(run_both(server_io, client_io, [&] { return new_key.has_value() && accepted; }));
  CHECK_FALSE(*new_key);
}
