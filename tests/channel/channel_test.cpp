// Channels between two real processes, over each provider: delivery, scale, completion
// tokens, cancellation, graceful close, budgets and pressure.

#include "support/messages.hpp"
#include "support/peers.hpp"
#include "support/processes.hpp"
#include "support/provider.hpp"

#include <bellows/bellows.hpp>

#include <asio/co_spawn.hpp>
#include <asio/detached.hpp>
#include <asio/experimental/as_tuple.hpp>
#include <asio/experimental/awaitable_operators.hpp>
#include <asio/experimental/deferred.hpp>
#include <asio/io_context.hpp>
#include <asio/steady_timer.hpp>
#include <asio/use_awaitable.hpp>
#include <asio/use_future.hpp>

#include <catch2/catch.hpp>

#include <random>
#include <set>
#include <string>

using namespace std::chrono_literals;
using asio::use_awaitable;
using asio::experimental::as_tuple;
using namespace asio::experimental::awaitable_operators;
namespace bt = bellows::test;

namespace {

std::size_t random_size(std::mt19937_64& rng) {
  const auto pick = std::uniform_int_distribution<int>(0, 99)(rng);
  const std::size_t limit = pick < 70 ? 256 : pick < 90 ? 64 * 1024 : 4 * 1024 * 1024;
  return std::uniform_int_distribution<std::size_t>(0, limit)(rng);
}

struct tally {
  int intact = 0;
  int wrong = 0;
  int errors = 0;
  std::set<std::string> error_kinds;  // what the errors said, for the report
};

asio::awaitable<void> send_all(bellows::channel& ch, const std::vector<std::vector<std::byte>>& messages, tally& t) {
  for (const auto& m : messages) {
    auto [ec, n] = co_await ch.async_send(asio::buffer(m), as_tuple(use_awaitable));
    if (ec || n != m.size()) {
      ++t.errors;
      t.error_kinds.insert("send: " + ec.message());
    }
  }
}

asio::awaitable<void> receive_all(bellows::channel& ch, const std::vector<std::vector<std::byte>>& messages, tally& t) {
  std::vector<std::byte> reply(4 * 1024 * 1024 + 1);
  for (const auto& m : messages) {
    auto [ec, n] = co_await ch.async_receive(asio::buffer(reply), as_tuple(use_awaitable));
    if (ec) {
      ++t.errors;
      t.error_kinds.insert("receive: " + ec.message());
      co_return;
    }
    const bool same = n == m.size() && std::equal(m.begin(), m.end(), reply.begin());
    ++(same ? t.intact : t.wrong);
  }
}

}  // namespace

TEST_CASE("50 channels carry random sizes 0 B - 4 MiB both ways, once, in order, intact", "[channel]") {
  const auto provider = GENERATE(from_range(bt::providers_here()));
  INFO("over " << bt::to_string(provider));
  const auto name = bt::unique_name("random");
  const auto uri = bt::uri_for(provider, name);
  constexpr int channels = 50;
  constexpr int per_channel = 10;
  auto server = bt::start_echo_server(uri, channels);
  REQUIRE(server.wait_ready());

  asio::io_context io;
  tally t;
  int closed = 0;
  std::vector<std::string> connect_failures;
  // Made before any connect starts: made inside each coroutine, they held the one thread for
  // seconds on the guest's emulated CPU while the other connects' deadlines ran.
  std::vector<std::vector<std::vector<std::byte>>> messages_of(channels);
  for (int c = 0; c < channels; ++c) {
    std::mt19937_64 rng(1000 + c);
    for (int i = 0; i < per_channel; ++i) messages_of[c].push_back(bt::random_bytes(random_size(rng), rng()));
  }
  for (int c = 0; c < channels; ++c) {
    asio::co_spawn(
        io,
        [&, c]() -> asio::awaitable<void> {
          const auto& messages = messages_of[c];
          auto [connect_ec, ch] =
              co_await bellows::async_connect(io.get_executor(), uri, bt::options_for(uri), as_tuple(use_awaitable));
          if (connect_ec) {
            connect_failures.push_back(connect_ec.message());
            co_return;
          }
          co_await (send_all(ch, messages, t) && receive_all(ch, messages, t));
          co_await ch.async_close(use_awaitable);
          std::vector<std::byte> tail(16);
          auto [ec, n] = co_await ch.async_receive(asio::buffer(tail), as_tuple(use_awaitable));
          if (ec == bellows::error::end_of_stream) ++closed;
        },
        asio::detached);
  }
  io.run_for(120s);
  CHECK(connect_failures == std::vector<std::string>{});
  CHECK(t.intact == channels * per_channel);
  CHECK(t.wrong == 0);
  CHECK(t.errors == 0);
  CHECK(t.error_kinds == std::set<std::string>{});
  CHECK(closed == channels);
  CHECK(server.wait() == 0);
}

TEST_CASE("1,000 channels (100 over rdma) between two processes enlarge at the same moment", "[channel]") {
  const auto provider = GENERATE(from_range(bt::providers_here()));
  INFO("over " << bt::to_string(provider));
  const auto name = bt::unique_name("thousand");
  const auto uri = bt::uri_for(provider, name);
  const int channels = bt::scaled(provider, 1000, 100);
  auto server = bt::start_echo_server(uri, channels);
  REQUIRE(server.wait_ready());

  asio::io_context io;
  std::vector<bellows::channel> open = bt::connect_many(io, uri, channels);
  REQUIRE(open.size() == static_cast<std::size_t>(channels));
  // shm, tcp: one link to the peer process, whatever the number of channels; rdma: a queue
  // pair each.
  CHECK(bellows::stats(io).links == (provider == bt::provider::rdma ? open.size() : 1u));

  io.restart();
  const auto message = bt::random_bytes(100'000, 5);
  tally t;
  int ended = 0;
  std::uint64_t enlargements = 0;
  for (auto& ch : open) {
    asio::co_spawn(
        io,
        [&]() -> asio::awaitable<void> {
          std::vector<std::byte> reply(message.size());
          co_await ch.async_send(asio::buffer(message), use_awaitable);
          const auto n = co_await ch.async_receive(asio::buffer(reply), use_awaitable);
          ++(n == message.size() && reply == message ? t.intact : t.wrong);
          enlargements += ch.stats().enlargements;
          co_await ch.async_close(use_awaitable);
          auto [ec, n2] = co_await ch.async_receive(asio::buffer(reply), as_tuple(use_awaitable));
          if (ec == bellows::error::end_of_stream) ++ended;
        },
        asio::detached);
  }
  io.run_for(120s);
  CHECK(t.intact == channels);
  CHECK(t.wrong == 0);
  CHECK(enlargements == static_cast<std::uint64_t>(channels));
  CHECK(ended == channels);
  open.clear();
  CHECK(server.wait() == 0);
}

TEST_CASE("10,000 channels (200 over rdma) between two processes, every one used at once", "[channel]") {
  const auto provider = GENERATE(from_range(bt::providers_here()));
  INFO("over " << bt::to_string(provider));
  const auto name = bt::unique_name("ten-thousand");
  const auto uri = bt::uri_for(provider, name);
  const int channels = bt::scaled(provider, 10'000, 200);
  auto server = bt::start_echo_server(uri, channels, 0, 240s);
  REQUIRE(server.wait_ready());

  asio::io_context io;
  std::vector<bellows::channel> open = bt::connect_many(io, uri, 1);
  REQUIRE(open.size() == 1);
  // Descriptors grow with peers, not with channels: the first channel brought the link's socket,
  // arenas and eventfds (rdma: the event and completion channels, the device); the rest add none.
  const auto fds_with_one = bt::open_fd_count();
  io.restart();
  for (auto& ch : bt::connect_many(io, uri, channels - 1, 180s)) open.push_back(std::move(ch));
  REQUIRE(open.size() == static_cast<std::size_t>(channels));
  CHECK(bt::open_fd_count() == fds_with_one);
  const auto context = bellows::stats(io);
  CHECK(context.links == (provider == bt::provider::rdma ? open.size() : 1u));
  // Each idle channel holds its control block and a 4 KiB ring on this side, nothing more.
  CHECK(context.registered_bytes == static_cast<std::size_t>(channels) * (128 + 4096));

  io.restart();
  tally t;
  int ended = 0;
  for (int c = 0; c < channels; ++c) {
    asio::co_spawn(
        io,
        [&, c]() -> asio::awaitable<void> {
          auto& ch = open[static_cast<std::size_t>(c)];
          // Up to 10,000 doorbells at once, more than the 4,096-entry ring holds: the overflow
          // path may run too.
          const auto message = bt::random_bytes(64, static_cast<std::uint64_t>(c));
          std::vector<std::byte> reply(message.size());
          co_await ch.async_send(asio::buffer(message), use_awaitable);
          const auto n = co_await ch.async_receive(asio::buffer(reply), use_awaitable);
          ++(n == message.size() && reply == message ? t.intact : t.wrong);
          co_await ch.async_close(use_awaitable);
          auto [ec, n2] = co_await ch.async_receive(asio::buffer(reply), as_tuple(use_awaitable));
          if (ec == bellows::error::end_of_stream) ++ended;
        },
        asio::detached);
  }
  io.run_for(180s);
  CHECK(t.intact == channels);
  CHECK(t.wrong == 0);
  CHECK(ended == channels);
  open.clear();
  CHECK(server.wait(60s) == 0);
}

TEST_CASE("Every completion token kind works, a receive is cancelled by ||, close loses nothing", "[channel]") {
  const auto provider = GENERATE(from_range(bt::providers_here()));
  INFO("over " << bt::to_string(provider));
  const auto name = bt::unique_name("tokens");
  const auto uri = bt::uri_for(provider, name);
  auto server = bt::start_echo_server(uri, 1);
  REQUIRE(server.wait_ready());
  asio::io_context io;

  // use_future, driven by running the io_context on this thread.
  auto connecting = bellows::async_connect(io.get_executor(), uri, bt::options_for(uri), asio::use_future);
  io.run_for(10s);
  bellows::channel ch = connecting.get();
  REQUIRE(ch.is_open());

  // A plain callback.
  const auto hello = bt::random_bytes(300, 1);
  std::error_code sent_ec = make_error_code(bellows::error::channel_closed);
  std::size_t sent = 0;
  ch.async_send(asio::buffer(hello), [&](std::error_code ec, std::size_t n) {
    sent_ec = ec;
    sent = n;
  });
  CHECK(sent == 0);  // never completed inside the initiating function
  io.restart();
  io.run_for(5s);
  CHECK(!sent_ec);
  CHECK(sent == hello.size());

  // deferred, launched later with a callback, after the channel moved to another object (an
  // operation reads the channel when it starts); then use_future for the reply.
  std::vector<std::byte> reply(1000);
  auto deferred_receive = ch.async_receive(asio::buffer(reply), asio::experimental::deferred);
  bellows::channel moved = std::move(ch);
  std::size_t received = 0;
  std::move(deferred_receive)([&](std::error_code ec, std::size_t n) { received = ec ? 0 : n; });
  io.restart();
  io.run_for(5s);
  ch = std::move(moved);
  CHECK(received == hello.size());
  CHECK(std::equal(hello.begin(), hello.end(), reply.begin()));

  bool cancelled = false, closed_cleanly = false;
  int echoed_after_close = 0;
  asio::co_spawn(
      io,
      [&]() -> asio::awaitable<void> {
        // Nothing is coming, so the timer wins and the receive is cancelled.
        asio::steady_timer timer(io, 50ms);
        auto winner =
            co_await (ch.async_receive(asio::buffer(reply), use_awaitable) || timer.async_wait(use_awaitable));
        cancelled = winner.index() == 1;
        // Nothing was lost by the cancellation: the next exchange works.
        co_await ch.async_send(asio::buffer(hello), use_awaitable);
        auto [ec, n] = co_await ch.async_receive(asio::buffer(reply), as_tuple(use_awaitable));
        CHECK(!ec);
        CHECK(n == hello.size());
        // Close right behind 200 sends: every one of them is still delivered and echoed. The
        // echoes are read meanwhile, or the echo server would block on a full ring.
        auto send_then_close = [&]() -> asio::awaitable<void> {
          for (int i = 0; i < 200; ++i) co_await ch.async_send(asio::buffer(hello), use_awaitable);
          co_await ch.async_close(use_awaitable);
          closed_cleanly = true;
        };
        auto read_until_end = [&]() -> asio::awaitable<void> {
          std::vector<std::byte> echo(1000);
          for (;;) {
            auto [rec, rn] = co_await ch.async_receive(asio::buffer(echo), as_tuple(use_awaitable));
            if (rec) {
              CHECK(rec == bellows::error::end_of_stream);
              break;
            }
            if (rn == hello.size() && std::equal(hello.begin(), hello.end(), echo.begin())) ++echoed_after_close;
          }
        };
        co_await (send_then_close() && read_until_end());
      },
      asio::detached);
  io.restart();
  io.run_for(20s);
  CHECK(cancelled);
  CHECK(closed_cleanly);
  CHECK(echoed_after_close == 200);
  CHECK(server.wait() == 0);
}

TEST_CASE("A receive buffer too small gets message_size with the size it needed, only that message is lost",
          "[channel]") {
  const auto provider = GENERATE(from_range(bt::providers_here()));
  INFO("over " << bt::to_string(provider));
  const auto name = bt::unique_name("small");
  const auto uri = bt::uri_for(provider, name);
  auto server = bt::start_echo_server(uri, 1);
  REQUIRE(server.wait_ready());
  asio::io_context io;
  std::vector<std::error_code> results;
  std::vector<std::size_t> sizes;
  asio::co_spawn(
      io,
      [&]() -> asio::awaitable<void> {
        auto ch = co_await bellows::async_connect(io.get_executor(), uri, bt::options_for(uri), use_awaitable);
        const auto big = bt::random_bytes(200'000, 2);       // echoed whole, in one frame
        const auto bigger = bt::random_bytes(2'000'000, 4);  // echoed in fragments
        const auto small = bt::random_bytes(100, 3);
        co_await ch.async_send(asio::buffer(small), use_awaitable);
        co_await ch.async_send(asio::buffer(big), use_awaitable);
        co_await ch.async_send(asio::buffer(bigger), use_awaitable);
        co_await ch.async_send(asio::buffer(small), use_awaitable);
        std::vector<std::byte> buffer(1000);
        for (int i = 0; i < 4; ++i) {
          auto [ec, n] = co_await ch.async_receive(asio::buffer(buffer), as_tuple(use_awaitable));
          results.push_back(ec);
          sizes.push_back(n);
          if (!ec) CHECK(std::equal(small.begin(), small.end(), buffer.begin()));
        }
        co_await ch.async_close(use_awaitable);
        auto [end, n] = co_await ch.async_receive(asio::buffer(buffer), as_tuple(use_awaitable));
        CHECK(end == bellows::error::end_of_stream);
      },
      asio::detached);
  io.run_for(20s);
  REQUIRE(results.size() == 4);
  CHECK(!results[0]);
  CHECK(results[1] == bellows::error::message_size);
  CHECK(results[2] == bellows::error::message_size);
  CHECK(!results[3]);
  // A discarded message reports its size, so the caller knows what buffer it needed.
  CHECK(sizes == std::vector<std::size_t>{100, 200'000, 2'000'000, 100});
  CHECK(server.wait() == 0);
}

TEST_CASE("Budget exhausted: the enlargement is denied and the message arrives in fragments", "[channel]") {
  const auto provider = GENERATE(from_range(bt::providers_here()));
  INFO("over " << bt::to_string(provider));
  const auto name = bt::unique_name("budget");
  const auto uri = bt::uri_for(provider, name);
  // The first tier fits, nothing larger does.
  auto server = bt::start_echo_server(uri, 1, 8 * 1024);
  REQUIRE(server.wait_ready());
  asio::io_context io;
  bool intact = false;
  bellows::channel_stats stats;
  asio::co_spawn(
      io,
      [&]() -> asio::awaitable<void> {
        auto ch = co_await bellows::async_connect(io.get_executor(), uri, bt::options_for(uri), use_awaitable);
        const auto message = bt::random_bytes(1 << 20, 9);
        std::vector<std::byte> reply(message.size());
        co_await ch.async_send(asio::buffer(message), use_awaitable);
        const auto n = co_await ch.async_receive(asio::buffer(reply), use_awaitable);
        intact = n == message.size() && reply == message;
        stats = ch.stats();
        co_await ch.async_close(use_awaitable);
        auto [end, n2] = co_await ch.async_receive(asio::buffer(reply), as_tuple(use_awaitable));
        CHECK(end == bellows::error::end_of_stream);
      },
      asio::detached);
  io.run_for(30s);
  CHECK(intact);
  CHECK(stats.denials >= 1);
  CHECK(stats.send_tier == 0);
  CHECK(server.wait() == 0);
}

TEST_CASE("io_context::run returns once the last channel to a peer is closed, as with sockets", "[channel]") {
  const auto provider = GENERATE(from_range(bt::providers_here()));
  INFO("over " << bt::to_string(provider));
  const auto name = bt::unique_name("run-returns");
  const auto uri = bt::uri_for(provider, name);
  auto server = bt::start_echo_server(uri, 1);
  REQUIRE(server.wait_ready());

  asio::io_context io;
  bool echoed = false;
  asio::co_spawn(
      io,
      [&]() -> asio::awaitable<void> {
        bellows::channel ch =
            co_await bellows::async_connect(io.get_executor(), uri, bt::options_for(uri), use_awaitable);
        const auto message = bt::random_bytes(64 * 1024, 7);  // enlarges, so a shrink timer is armed too
        std::vector<std::byte> reply(message.size());
        co_await ch.async_send(asio::buffer(message), use_awaitable);
        const auto n = co_await ch.async_receive(asio::buffer(reply), use_awaitable);
        echoed = n == message.size() && reply == message;
        co_await ch.async_close(use_awaitable);
        std::byte none[1];
        auto [ec, ignored] = co_await ch.async_receive(asio::buffer(none), as_tuple(use_awaitable));
        CHECK(ec == bellows::error::end_of_stream);
      },
      asio::detached);
  // run_for returns early, with the context stopped, only when no work is left.
  io.run_for(10s);
  CHECK(echoed);
  CHECK(io.stopped());
  CHECK(bellows::stats(io).links == 0);
  // shm, tcp: the link went with its last channel, before the peer's detach could free that
  // channel's memory; the budget still has to get it back. (rdma keeps closed channels'
  // registrations cached in its pool for the next channel, counted until trimmed.)
  if (provider != bt::provider::rdma) CHECK(bellows::stats(io).registered_bytes == 0);
  CHECK(server.wait(10s) == 0);
}

TEST_CASE("A short budget raises pressure: an idle large ring shrinks at once, then another channel grows",
          "[channel]") {
  const auto provider = GENERATE(from_range(bt::providers_here()));
  INFO("over " << bt::to_string(provider));
  const auto name = bt::unique_name("pressure");
  const auto uri = bt::uri_for(provider, name);
  // One 1 MiB ring fits, two do not.
  auto server = bt::start_echo_server(uri, 2, 1536 * 1024);
  REQUIRE(server.wait_ready());

  asio::io_context io;
  bellows::channel_options options = bt::options_for(uri);
  options.idle_shrink_after = 60s;  // only pressure can make the first channel shrink in time
  options.retry_after_denial = 50ms;
  bellows::channel first, second;
  int intact = 0, ended = 0;
  bellows::channel_stats first_after, second_after;
  auto echo = [&](bellows::channel& ch, std::uint64_t seed) -> asio::awaitable<void> {
    const auto message = bt::random_bytes(100'000, seed);  // needs the 1 MiB tier
    std::vector<std::byte> reply(message.size());
    co_await ch.async_send(asio::buffer(message), use_awaitable);
    const auto n = co_await ch.async_receive(asio::buffer(reply), use_awaitable);
    if (n == message.size() && reply == message) ++intact;
  };
  auto wait_end = [&](bellows::channel& ch) -> asio::awaitable<void> {
    std::byte none[1];
    auto [ec, n] = co_await ch.async_receive(asio::buffer(none), as_tuple(use_awaitable));
    if (ec == bellows::error::end_of_stream) ++ended;
  };
  asio::co_spawn(
      io,
      [&]() -> asio::awaitable<void> {
        first = co_await bellows::async_connect(io.get_executor(), uri, options, use_awaitable);
        second = co_await bellows::async_connect(io.get_executor(), uri, options, use_awaitable);
        co_await echo(first, 1);
        CHECK(first.stats().send_tier == 2);
        asio::co_spawn(io, wait_end(first), asio::detached);  // keeps this side serving the peer

        // The peer cannot give the second channel 1 MiB: it fragments, and the peer asks the
        // first channel, idle now, to give its ring back.
        co_await echo(second, 2);
        asio::steady_timer tick(io);
        for (int i = 0; i < 500 && first.stats().send_tier != 0; ++i) {
          tick.expires_after(10ms);
          co_await tick.async_wait(use_awaitable);
        }
        first_after = first.stats();

        // Once the denial's back-off is over the second channel grows into the freed memory.
        tick.expires_after(options.retry_after_denial);
        co_await tick.async_wait(use_awaitable);
        co_await echo(second, 3);
        second_after = second.stats();

        co_await first.async_close(use_awaitable);
        co_await second.async_close(use_awaitable);
        co_await wait_end(second);
      },
      asio::detached);
  io.run_for(60s);
  CHECK(intact == 3);
  CHECK(first_after.send_tier == 0);
  CHECK(first_after.shrinks == 1);
  CHECK(second_after.denials == 1);
  CHECK(second_after.enlargements == 1);
  CHECK(second_after.send_tier == 2);
  CHECK(ended == 2);
  CHECK(server.wait() == 0);
}
