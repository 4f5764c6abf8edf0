// Channels over rdma:// on a real device (Soft-RoCE in the rxe guest): acceptor and connector
// in one process, talking through the device's loopback.

#include "fabric/verbs/connector.hpp"
#include "reactor/reactor.hpp"
#include "support/messages.hpp"
#include "support/processes.hpp"
#include "support/rdma.hpp"
#include "support/run_until.hpp"

#include <bellows/bellows.hpp>

#include <asio/co_spawn.hpp>
#include <asio/detached.hpp>
#include <asio/experimental/as_tuple.hpp>
#include <asio/io_context.hpp>
#include <asio/steady_timer.hpp>
#include <asio/use_awaitable.hpp>

#include <catch2/catch.hpp>

#include <algorithm>
#include <cstring>
#include <iostream>
#include <optional>
#include <random>

using namespace std::chrono_literals;
using asio::use_awaitable;
using asio::experimental::as_tuple;
namespace bt = bellows::test;

TEST_CASE("rdma: a channel carries every tier both ways and closes gracefully", "[verbs]") {
  if (!bt::rdma_here()) return bt::skip_case("no RDMA device here; tests/rxe runs this on Soft-RoCE");
  asio::io_context io;
  const std::string uri = bt::rdma_uri(bt::random_port());
  bellows::acceptor acc(io.get_executor(), uri);
  std::vector<std::size_t> sizes{0, 8, 100, 2000, 3000, 30'000, 100'000, 700'000, 3'000'000, 8};
  int intact = 0, errors = 0;
  bool server_done = false, client_done = false;
  asio::co_spawn(
      io,
      [&]() -> asio::awaitable<void> {
        auto ch = co_await acc.async_accept(use_awaitable);
        std::vector<std::byte> buffer(4'000'000);
        for (;;) {
          auto [ec, n] = co_await ch.async_receive(asio::buffer(buffer), as_tuple(use_awaitable));
          if (ec) break;
          co_await ch.async_send(asio::buffer(buffer.data(), n), use_awaitable);
        }
        co_await ch.async_close(as_tuple(use_awaitable));
        server_done = true;
      },
      asio::detached);
  asio::co_spawn(
      io,
      [&]() -> asio::awaitable<void> {
        auto ch = co_await bellows::async_connect(io.get_executor(), uri, use_awaitable);
        std::vector<std::byte> reply(4'000'000);
        for (std::size_t i = 0; i < sizes.size(); ++i) {
          const auto message = bt::random_bytes(sizes[i], i + 1);
          co_await ch.async_send(asio::buffer(message), use_awaitable);
          auto [ec, n] = co_await ch.async_receive(asio::buffer(reply), as_tuple(use_awaitable));
          if (ec || n != message.size() || !std::equal(message.begin(), message.end(), reply.begin())) {
            ++errors;
            UNSCOPED_INFO("size " << sizes[i] << ": " << ec.message() << ", " << n << " bytes");
          } else {
            ++intact;
          }
        }
        CHECK(ch.stats().enlargements >= 2);
        co_await ch.async_close(use_awaitable);
        client_done = true;
      },
      asio::detached);
  REQUIRE(bt::run_until(
      io, [&] { return server_done && client_done; }, 60s));
  CHECK(intact == static_cast<int>(sizes.size()));
  CHECK(errors == 0);
}

TEST_CASE("rdma: once warm, enlargements and shrinks reuse registrations: no ibv_reg_mr per cycle", "[verbs]") {
  if (!bt::rdma_here()) return bt::skip_case("no RDMA device here; tests/rxe runs this on Soft-RoCE");
  asio::io_context io;
  const std::string uri = bt::rdma_uri(bt::random_port());
  bellows::channel_options options;
  options.idle_shrink_after = 20ms;
  options.ack_timeout = 30s;
  bellows::acceptor acc(io.get_executor(), uri, options);
  auto& network =
      dynamic_cast<bellows::verbs::connector&>(*bellows::detail::reactor::of(io).connector_for("rdma")).network();
  std::vector<std::uint64_t> registrations_after_cycle;
  int intact = 0;
  bool done = false;
  asio::co_spawn(
      io,
      [&]() -> asio::awaitable<void> {
        auto ch = co_await acc.async_accept(use_awaitable);
        std::vector<std::byte> buffer(200'000);
        for (;;) {
          auto [ec, n] = co_await ch.async_receive(asio::buffer(buffer), as_tuple(use_awaitable));
          if (ec) break;
          co_await ch.async_send(asio::buffer(buffer.data(), n), use_awaitable);
        }
      },
      asio::detached);
  asio::co_spawn(
      io,
      [&]() -> asio::awaitable<void> {
        auto ch = co_await bellows::async_connect(io.get_executor(), uri, options, use_awaitable);
        const auto message = bt::random_bytes(100'000, 3);  // the 1 MiB tier, both ways
        std::vector<std::byte> reply(message.size());
        asio::steady_timer idle(io);
        for (int cycle = 0; cycle < 4; ++cycle) {
          co_await ch.async_send(asio::buffer(message), use_awaitable);
          const auto n = co_await ch.async_receive(asio::buffer(reply), use_awaitable);
          if (n == message.size() && reply == message) ++intact;
          // Idle until both directions shrank back to the first tier.
          for (int i = 0; i < 200 && (ch.stats().send_tier != 0 || ch.stats().receive_tier != 0); ++i) {
            idle.expires_after(10ms);
            co_await idle.async_wait(use_awaitable);
          }
          registrations_after_cycle.push_back(network.registrations());
        }
        co_await ch.async_close(use_awaitable);
        done = true;
      },
      asio::detached);
  REQUIRE(bt::run_until(
      io, [&] { return done; }, 60s));
  CHECK(intact == 4);
  REQUIRE(registrations_after_cycle.size() == 4);
  INFO("ibv_reg_mr calls after each cycle: " << registrations_after_cycle[0] << ", " << registrations_after_cycle[1]
                                             << ", " << registrations_after_cycle[2] << ", "
                                             << registrations_after_cycle[3]);
  CHECK(registrations_after_cycle[0] > 0);
  CHECK(registrations_after_cycle[3] == registrations_after_cycle[1]);
}

TEST_CASE(
    "rdma: a large message is written straight into an aligned receive buffer, and through the ring into any other",
    "[verbs][direct]") {
  if (!bt::rdma_here()) return bt::skip_case("no RDMA device here; tests/rxe runs this on Soft-RoCE");
  asio::io_context io;
  const std::string uri = bt::rdma_uri(bt::random_port());
  bellows::acceptor acc(io.get_executor(), uri);
  std::optional<bellows::channel> server, client;
  acc.async_accept([&](std::error_code ec, bellows::channel ch) {
    if (!ec) server = std::move(ch);
  });
  bellows::async_connect(io.get_executor(), uri, [&](std::error_code ec, bellows::channel ch) {
    if (!ec) client = std::move(ch);
  });
  REQUIRE(bt::run_until(
      io, [&] { return server && client; }, 10s));
  const auto message = bt::random_bytes(std::size_t{3} << 20, 17);
  std::vector<std::byte> inbox(message.size() + 8);
  // A lent buffer must start on an 8-byte boundary, as every ring does.
  for (const std::size_t misaligned_by : {std::size_t{1}, std::size_t{0}}) {
    INFO("a receive buffer " << misaligned_by << " bytes past an 8-byte boundary");
    std::optional<std::error_code> received, sent;
    std::size_t bytes = 0;
    server->async_receive(asio::buffer(inbox.data() + misaligned_by, message.size()),
                          [&](std::error_code ec, std::size_t n) {
                            received = ec;
                            bytes = n;
                          });
    client->async_send(asio::buffer(message), [&](std::error_code ec, std::size_t) { sent = ec; });
    REQUIRE(bt::run_until(
        io, [&] { return received && sent; }, 30s));
    CHECK(!*received);
    CHECK(!*sent);
    REQUIRE(bytes == message.size());
    CHECK(std::equal(message.begin(), message.end(), inbox.begin() + static_cast<std::ptrdiff_t>(misaligned_by)));
  }
  const auto s = server->stats();
  CHECK(s.messages_received == 2);
  CHECK(s.direct_messages_received == 1);  // the aligned one
}

namespace {

constexpr std::size_t torn_size = 16 << 20;

/// ARGS: role URI. Sends one message of torn_size to URI; 0 if the send failed with
/// connection_reset (its receiver tore the channel down meanwhile), 1 otherwise.
int send_one_large(const std::vector<std::string>& args) {
  asio::io_context io;
  std::optional<std::error_code> sent;
  const auto message = bt::random_bytes(torn_size, 11);
  asio::co_spawn(
      io,
      [&]() -> asio::awaitable<void> {
        auto ch = co_await bellows::async_connect(io.get_executor(), args.at(1), use_awaitable);
        auto [ec, n] = co_await ch.async_send(asio::buffer(message), as_tuple(use_awaitable));
        sent = ec;
      },
      asio::detached);
  bt::run_until(
      io, [&] { return sent.has_value(); }, 30s);
  if (!sent) std::cerr << "large sender: no result within 30 s\n";
  if (sent && *sent != bellows::error::connection_reset) std::cerr << "large sender: " << sent->message() << "\n";
  return sent == bellows::error::connection_reset ? 0 : 1;
}
const bt::child_role large_sender("rdma-send-one-large", send_one_large);

}  // namespace

// In another process: its io thread posts the whole message's requests in one call.
TEST_CASE("rdma: a channel torn down while the peer writes into its lent buffer takes it back, and lands nothing more",
          "[verbs][direct]") {
  if (!bt::rdma_here()) return bt::skip_case("no RDMA device here; tests/rxe runs this on Soft-RoCE");
  asio::io_context io;
  const std::string uri = bt::rdma_uri(bt::random_port());
  bellows::acceptor acc(io.get_executor(), uri);
  std::optional<bellows::channel> server;
  acc.async_accept([&](std::error_code ec, bellows::channel ch) {
    if (!ec) server = std::move(ch);
  });
  auto sender = bt::child_process::exec_self(large_sender, {uri});
  REQUIRE(bt::run_until(
      io, [&] { return server.has_value(); }, 20s));
  // 16 MiB moves for most of a second on the guest's Soft-RoCE: most of it is still to come
  // when its first MiB is seen in the buffer.
  constexpr std::size_t probe = 1 << 20;
  const auto word_at = [](const std::byte* at) {
    std::uint64_t w;
    std::memcpy(&w, at, sizeof w);
    return w;
  };
  std::vector<std::byte> inbox(torn_size);
  std::optional<std::error_code> received;
  server->async_receive(asio::buffer(inbox), [&](std::error_code ec, std::size_t) { received = ec; });
  REQUIRE(bt::run_until(
      io, [&] { return word_at(inbox.data() + probe) != 0; }, 20s));
  INFO("the receive: " << (received ? received->message() : "pending"));
  REQUIRE(!received);  // lent, and being written

  server->abort();
  REQUIRE(bt::run_until(
      io, [&] { return received.has_value(); }, 10s));
  CHECK(*received == bellows::error::channel_closed);
  // The buffer is the application's again: nothing of the rest may land in it.
  std::fill(inbox.begin(), inbox.end(), std::byte{0});
  CHECK(sender.wait() == 0);
  CHECK(std::all_of(inbox.begin(), inbox.end(), [](std::byte b) { return b == std::byte{0}; }));
}
