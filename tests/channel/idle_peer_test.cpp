// A peer with nothing pending is still a peer: while its io_context runs for any reason, it
// answers enlargements; and an io_context with open channels and acceptors but nothing pending
// returns from run(), as one with open Asio sockets does.

#include "support/messages.hpp"
#include "support/peers.hpp"
#include "support/processes.hpp"
#include "support/provider.hpp"
#include "support/run_until.hpp"

#include <bellows/bellows.hpp>

#include <asio/co_spawn.hpp>
#include <asio/detached.hpp>
#include <asio/executor_work_guard.hpp>
#include <asio/experimental/as_tuple.hpp>
#include <asio/io_context.hpp>
#include <asio/steady_timer.hpp>
#include <asio/use_awaitable.hpp>

#include <catch2/catch.hpp>

#include <condition_variable>
#include <mutex>
#include <thread>

using namespace std::chrono_literals;
using asio::use_awaitable;
using asio::experimental::as_tuple;
namespace bt = bellows::test;

namespace {

constexpr std::size_t large = 100'000;  // needs the largest default tier
constexpr auto idle_for = 3s;

/// Exit statuses of the idle receiver.
enum idle_verdict : int {
  answered = 0,
  not_enlarged_while_idle = 1,
  message_lost = 2,
  stalled = 3,
};

/// ARGS: idle-receiver URI KEEP_ALIVE. Accepts one channel, then runs its io_context for three
/// seconds with no receive pending, kept alive by a work guard ("guard") or by a timer that
/// fires every 10 ms ("timer"). Only then does it receive.
int run_idle_receiver(const std::vector<std::string>& args) {
  const std::string uri = args.at(1);
  const bool by_timer = args.at(2) == "timer";
  asio::io_context io;
  bellows::acceptor acc(io.get_executor(), uri, bt::options_for(uri));
  bt::child_process::signal_ready();
  std::optional<bellows::channel> ch;
  acc.async_accept([&](std::error_code ec, bellows::channel c) {
    if (!ec) ch = std::move(c);
  });
  if (!bt::run_until(
          io, [&] { return ch.has_value(); }, 10s))
    return stalled;

  const auto idle_end = std::chrono::steady_clock::now() + idle_for;
  if (by_timer) {
    asio::steady_timer tick(io);
    std::function<void(std::error_code)> again = [&](std::error_code) {
      if (std::chrono::steady_clock::now() >= idle_end) return;
      tick.expires_after(10ms);
      tick.async_wait(again);
    };
    again({});
    io.restart();
    io.run();
  } else {
    auto guard = asio::make_work_guard(io);
    io.restart();
    io.run_until(idle_end);
  }
  // The sender's ring grew while nobody here asked for anything.
  const bool enlarged = ch->stats().receive_tier == bellows::default_tiers().size() - 1;

  std::vector<std::byte> inbox(large);
  std::optional<std::size_t> received;
  ch->async_receive(asio::buffer(inbox), [&](std::error_code ec, std::size_t n) { received = ec ? 0 : n; });
  if (!bt::run_until(
          io, [&] { return received.has_value(); }, 10s))
    return stalled;
  if (*received != large || inbox != bt::random_bytes(large, 7)) return message_lost;
  return enlarged ? answered : not_enlarged_while_idle;
}

const bt::child_role idle_receiver("idle-receiver", run_idle_receiver);

constexpr std::size_t huge = 10'000'000;

/// ARGS: busy-receiver URI. Accepts one channel and its hello, signals ready a second time, then keeps its only thread
/// busy outside the io_context for three seconds (as a long computation would), then receives a 100,000 B and a 10 MB
/// message and checks both.
int run_busy_receiver(const std::vector<std::string>& args) {
  const std::string uri = args.at(1);
  asio::io_context io;
  bellows::acceptor acc(io.get_executor(), uri, bt::options_for(uri));
  bt::child_process::signal_ready();
  std::optional<bellows::channel> ch;
  acc.async_accept([&](std::error_code ec, bellows::channel c) {
    if (!ec) ch = std::move(c);
  });
  if (!bt::run_until(
          io, [&] { return ch.has_value(); }, 10s))
    return stalled;
  // Wait for the sender's hello so both ends are fully set up, then tell the sender out of band
  // (through the ready pipe, not the channel) that this thread is away: a request it sends from
  // then on cannot be answered here until the sleep ends.
  std::byte hello[1];
  bool greeted = false;
  ch->async_receive(asio::buffer(hello), [&](std::error_code ec, std::size_t) { greeted = !ec; });
  if (!bt::run_until(
          io, [&] { return greeted; }, 10s))
    return stalled;
  bt::child_process::signal_ready();
  std::this_thread::sleep_for(idle_for);  // the thread is elsewhere: nothing here can answer

  std::vector<std::byte> inbox(huge);
  bool intact = true;
  int received = 0;
  for (std::size_t size : {large, huge}) {
    std::optional<std::size_t> n;
    ch->async_receive(asio::buffer(inbox), [&](std::error_code ec, std::size_t got) { n = ec ? 0 : got; });
    if (!bt::run_until(
            io, [&] { return n.has_value(); }, 20s))
      return stalled;
    const auto expected = bt::random_bytes(size, size);
    intact = intact && *n == size && std::equal(expected.begin(), expected.end(), inbox.begin());
    ++received;
  }
  return intact && received == 2 ? answered : message_lost;
}

const bt::child_role busy_receiver("busy-receiver", run_busy_receiver);

/// Runs `io` and reports whether run() returned by itself within `limit` (else it is stopped).
bool run_returns_by_itself(asio::io_context& io, std::chrono::milliseconds limit) {
  std::mutex m;
  std::condition_variable cv;
  bool returned = false;
  bool stopped_by_watchdog = false;
  std::thread watchdog([&] {
    std::unique_lock lock(m);
    if (!cv.wait_for(lock, limit, [&] { return returned; })) {
      stopped_by_watchdog = true;
      io.stop();
    }
  });
  io.restart();
  io.run();
  {
    std::lock_guard lock(m);
    returned = true;
  }
  cv.notify_one();
  watchdog.join();
  return !stopped_by_watchdog;
}

}  // namespace

TEST_CASE("A receiver with no receive pending answers an enlargement while its io_context runs", "[channel][idle]") {
  const auto provider = GENERATE(from_range(bt::providers_here()));
  const std::string keep_alive = GENERATE("guard", "timer");
  INFO("over " << bt::to_string(provider) << ", receiver kept running by a " << keep_alive);
  const auto uri = bt::uri_for(provider, bt::unique_name("idle-receiver"));
  auto peer = bt::child_process::exec_self(idle_receiver, {uri, keep_alive});
  REQUIRE(peer.wait_ready());

  asio::io_context io;
  auto options = bt::options_for(uri);
  // Shorter than the receiver's idle time: only an answer from the idle receiver lets it succeed.
  options.ack_timeout = 2s;
  std::optional<std::error_code> sent;
  std::chrono::steady_clock::duration took{};
  bellows::channel_stats stats;
  asio::co_spawn(
      io,
      [&]() -> asio::awaitable<void> {
        auto ch = co_await bellows::async_connect(io.get_executor(), uri, options, use_awaitable);
        const auto message = bt::random_bytes(large, 7);
        const auto start = std::chrono::steady_clock::now();
        auto [ec, n] = co_await ch.async_send(asio::buffer(message), as_tuple(use_awaitable));
        took = std::chrono::steady_clock::now() - start;
        sent = ec;
        stats = ch.stats();
        // Stay open until the receiver has read the message.
        co_await ch.async_receive(asio::buffer(&stats, 0), as_tuple(use_awaitable));
      },
      asio::detached);
  REQUIRE(bt::run_until(
      io, [&] { return sent.has_value(); }, 20s));
  INFO("send: " << sent->message() << " after " << std::chrono::duration<double>(took).count() << " s");
  CHECK(!*sent);
  CHECK(stats.ack_timeouts == 0);
  CHECK(took < idle_for);
  CHECK(peer.wait() == answered);
}

TEST_CASE("run() returns with channels and an acceptor open and nothing pending", "[channel][idle]") {
  const auto provider = GENERATE(from_range(bt::providers_here()));
  INFO("over " << bt::to_string(provider));
  const auto uri = bt::uri_for(provider, bt::unique_name("run-returns"));
  asio::io_context io;
  bellows::acceptor acc(io.get_executor(), uri, bt::options_for(uri));
  REQUIRE(run_returns_by_itself(io, 5s));  // an acceptor alone

  std::optional<bellows::channel> near, far;
  int echoed = 0;
  asio::co_spawn(
      io,
      [&]() -> asio::awaitable<void> {
        near = co_await bellows::async_connect(io.get_executor(), uri, bt::options_for(uri), use_awaitable);
        const auto message = bt::random_bytes(large, 3);
        co_await near->async_send(asio::buffer(message), use_awaitable);
      },
      asio::detached);
  acc.async_accept([&](std::error_code ec, bellows::channel c) {
    REQUIRE(!ec);
    far = std::move(c);
    auto inbox = std::make_shared<std::vector<std::byte>>(large);
    far->async_receive(asio::buffer(*inbox), [&, inbox](std::error_code rec, std::size_t n) {
      if (!rec && n == large && *inbox == bt::random_bytes(large, 3)) ++echoed;
    });
  });
  REQUIRE(bt::run_until(
      io, [&] { return echoed == 1 && near.has_value(); }, 20s));
  INFO("channels open: both ends; acceptor open, no accept pending");
  CHECK(run_returns_by_itself(io, 5s));
  CHECK(near->is_open());
  CHECK(far->is_open());
}

TEST_CASE("A receiver busy outside its io_context makes no send fail: they go on, then switch to the late grant",
          "[channel][idle]") {
  const auto provider = GENERATE(from_range(bt::providers_here()));
  INFO("over " << bt::to_string(provider));
  const auto uri = bt::uri_for(provider, bt::unique_name("busy-receiver"));
  auto peer = bt::child_process::exec_self(busy_receiver, {uri});
  REQUIRE(peer.wait_ready());

  asio::io_context io;
  auto options = bt::options_for(uri);
  options.ack_timeout = 1s;  // shorter than the receiver's absence
  std::vector<std::error_code> results;
  bellows::channel_stats stats;
  bool finished = false;
  std::optional<bellows::channel> ch;
  bool greeted = false;
  asio::co_spawn(
      io,
      [&]() -> asio::awaitable<void> {
        ch = co_await bellows::async_connect(io.get_executor(), uri, options, use_awaitable);
        const std::byte hello[1] = {};
        co_await ch->async_send(asio::buffer(hello), use_awaitable);
        greeted = true;
      },
      asio::detached);
  REQUIRE(bt::run_until(
      io, [&] { return greeted; }, 10s));
  REQUIRE(peer.wait_ready());  // the receiver is away from now on

  asio::co_spawn(
      io,
      [&]() -> asio::awaitable<void> {
        for (std::size_t size : {large, huge}) {
          const auto message = bt::random_bytes(size, size);
          auto [ec, n] = co_await ch->async_send(asio::buffer(message), as_tuple(use_awaitable));
          results.push_back(ec);
        }
        stats = ch->stats();
        finished = true;
        co_await ch->async_receive(asio::buffer(&stats, 0), as_tuple(use_awaitable));  // until the peer goes
      },
      asio::detached);
  REQUIRE(bt::run_until(
      io, [&] { return finished; }, 30s));
  CHECK(results == std::vector<std::error_code>{{}, {}});
  CHECK(stats.ack_timeouts == 1);  // the request went unanswered for a while ...
  CHECK(stats.enlargements == 1);  // ... and its late grant was honoured
  CHECK(stats.send_tier == bellows::default_tiers().size() - 1);
  CHECK(peer.wait() == answered);
}
