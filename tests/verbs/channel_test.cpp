// Channels over rdma:// on a real device (Soft-RoCE in the rxe guest): acceptor and connector
// in one process, talking through the device's loopback.

#include "support/messages.hpp"
#include "support/rdma.hpp"
#include "support/run_until.hpp"

#include <bellows/bellows.hpp>

#include <asio/co_spawn.hpp>
#include <asio/detached.hpp>
#include <asio/experimental/as_tuple.hpp>
#include <asio/io_context.hpp>
#include <asio/use_awaitable.hpp>

#include <catch2/catch.hpp>

#include <random>

using namespace std::chrono_literals;
using asio::use_awaitable;
using asio::experimental::as_tuple;
namespace bt = bellows::test;

TEST_CASE("rdma: a channel carries every tier both ways and closes gracefully", "[verbs]") {
  if (!bt::rdma_here()) return;
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
