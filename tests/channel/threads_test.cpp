// Channels used the way Asio users use sockets with threads: one io_context run by a pool of
// threads with every channel on its own strand; operations started from threads that do not
// run the io_context; cancelled accepts and connects. CI runs these under ThreadSanitizer.

#include "support/messages.hpp"
#include "support/peers.hpp"
#include "support/processes.hpp"
#include "support/provider.hpp"
#include "support/run_until.hpp"

#include <bellows/bellows.hpp>
#include <bellows/detail/executor_target.hpp>

#include <asio/bind_cancellation_slot.hpp>
#include <asio/cancellation_signal.hpp>
#include <asio/co_spawn.hpp>
#include <asio/detached.hpp>
#include <asio/executor_work_guard.hpp>
#include <asio/experimental/as_tuple.hpp>
#include <asio/experimental/awaitable_operators.hpp>
#include <asio/io_context.hpp>
#include <asio/steady_timer.hpp>
#include <asio/strand.hpp>
#include <asio/use_awaitable.hpp>
#include <asio/use_future.hpp>

#include <catch2/catch.hpp>

#include <atomic>
#include <future>
#include <optional>
#include <random>
#include <thread>
#include <vector>

using namespace std::chrono_literals;
using asio::use_awaitable;
using asio::experimental::as_tuple;
using namespace asio::experimental::awaitable_operators;
namespace bt = bellows::test;

namespace {

using strand = asio::strand<asio::io_context::executor_type>;

/// Sizes through every default tier: the first ring (4 KiB), the second (64 KiB), the third
/// (1 MiB), and past it (fragmented).
std::size_t size_through_tiers(std::mt19937_64& rng, std::size_t largest) {
  const std::size_t limits[] = {200, 2000, 30000, 500000, largest};
  const auto pick = limits[std::uniform_int_distribution<int>(0, 4)(rng)];
  return std::uniform_int_distribution<std::size_t>(0, std::min(pick, largest))(rng);
}

/// What every side of a threaded test counts; each counter is touched from many threads.
struct tally {
  std::atomic<int> intact{0};
  std::atomic<int> wrong{0};
  std::atomic<int> errors{0};
  std::atomic<int> off_strand{0};  // a completion that ran outside its channel's strand
  std::atomic<int> ack_timeouts{0};
  std::atomic<int> finished{0};
};

bellows::channel_options counting_options(const std::string& uri, tally& t) {
  auto options = bt::options_for(uri);
  options.on_tier_event = [&t](const bellows::tier_event& e) {
    if (e.kind == bellows::tier_event::what::timed_out) ++t.ack_timeouts;
  };
  return options;
}

/// False when a channel on a strand runs a completion outside it (channels not on a strand,
/// as in the four-threads case, are not judged). Never inlined: clang 14 keeps the address of a
/// thread_local (the strand's call stack) across a coroutine's suspension, so inlined into a
/// coroutine resumed on another thread it would read the first thread's.
[[gnu::noinline]] bool on_own_strand(const bellows::channel& ch) {
  const auto ex = ch.get_executor();  // target() points into it
  const auto* s = bellows::detail::executor_target<strand>(ex);
  return s == nullptr || s->running_in_this_thread();
}

/// Sends `count` random messages and checks that each comes back whole.
asio::awaitable<void> send_and_check_echoes(bellows::channel ch, std::uint64_t seed, int count, std::size_t largest,
                                            tally& t) {
  std::mt19937_64 rng(seed);
  std::vector<std::byte> reply(largest);
  for (int i = 0; i < count; ++i) {
    const auto message = bt::random_bytes(rng, size_through_tiers(rng, largest));
    auto [sent, n] = co_await ch.async_send(asio::buffer(message), as_tuple(use_awaitable));
    if (!on_own_strand(ch)) ++t.off_strand;
    auto [received, got] = co_await ch.async_receive(asio::buffer(reply), as_tuple(use_awaitable));
    if (!on_own_strand(ch)) ++t.off_strand;
    if (sent || received) {
      ++t.errors;
      break;
    }
    const bool same =
        n == message.size() && got == message.size() && std::equal(message.begin(), message.end(), reply.begin());
    ++(same ? t.intact : t.wrong);
  }
  ++t.finished;
}

/// Sends back every message it receives, `count` of them.
asio::awaitable<void> echo(bellows::channel ch, int count, tally& t) {
  for (int i = 0; i < count; ++i) {
    auto [ec, view] = co_await ch.async_receive_view(as_tuple(use_awaitable));
    if (!on_own_strand(ch)) ++t.off_strand;
    if (ec) {
      ++t.errors;
      break;
    }
    auto [sent, n] = co_await ch.async_send(view.buffer(), as_tuple(use_awaitable));
    if (!on_own_strand(ch)) ++t.off_strand;
    if (sent) {
      ++t.errors;
      break;
    }
  }
  ++t.finished;
}

/// Waits (bounded) for `done`, which other threads make true.
template <class Done>
bool wait_until(Done done, std::chrono::seconds limit) {
  const auto deadline = std::chrono::steady_clock::now() + limit;
  while (!done() && std::chrono::steady_clock::now() < deadline) std::this_thread::sleep_for(5ms);
  return done();
}

/// Runs `io` on `threads` threads until `done` holds or `limit` passes; then stops and joins them.
template <class Done>
bool run_on_threads(asio::io_context& io, int threads, Done done, std::chrono::seconds limit) {
  auto guard = asio::make_work_guard(io);
  std::vector<std::thread> pool;
  for (int i = 0; i < threads; ++i) pool.emplace_back([&io] { io.run(); });
  const bool finished = wait_until(done, limit);
  guard.reset();
  io.stop();
  for (auto& t : pool) t.join();
  return finished;
}

}  // namespace

TEST_CASE("One io_context on 4 threads, every channel on its own strand: random sizes through every tier",
          "[channel][threads]") {
  const auto provider = GENERATE(from_range(bt::providers_here()));
  INFO("over " << bt::to_string(provider));
  const auto uri = bt::uri_for(provider, bt::unique_name("strands"));
  const int channels = bt::scaled(provider, 16, 4);
  const int messages = bt::scaled(provider, 24, 6);
  const std::size_t largest = bt::scaled(provider, 2 << 20, 256 << 10);

  asio::io_context io(4);
  tally near, far;
  bellows::acceptor acc(asio::make_strand(io), uri, counting_options(uri, far));
  std::atomic<int> opened{0}, open_failures{0};
  for (int i = 0; i < channels; ++i) {
    acc.async_accept(asio::make_strand(io), [&](std::error_code ec, bellows::channel ch) {
      if (ec) return void(++open_failures);
      const auto ex = ch.get_executor();
      if (bellows::detail::executor_target<strand>(ex) == nullptr) ++far.off_strand;
      asio::co_spawn(ex, echo(std::move(ch), messages, far), asio::detached);
      ++opened;
    });
    const auto ex = asio::make_strand(io);
    bellows::async_connect(ex, uri, counting_options(uri, near), [&, i](std::error_code ec, bellows::channel ch) {
      if (ec) return void(++open_failures);
      const auto on = ch.get_executor();
      if (bellows::detail::executor_target<strand>(on) == nullptr) ++near.off_strand;
      asio::co_spawn(on, send_and_check_echoes(std::move(ch), 1000 + i, messages, largest, near), asio::detached);
      ++opened;
    });
  }
  const bool done = run_on_threads(
      io, 4, [&] { return (near.finished + far.finished == 2 * channels) || open_failures != 0; }, 120s);
  CHECK(done);
  CHECK(open_failures == 0);
  CHECK(opened == 2 * channels);
  CHECK(near.intact == channels * messages);
  CHECK(near.wrong == 0);
  CHECK(near.errors + far.errors == 0);
  CHECK(near.off_strand + far.off_strand == 0);
  CHECK(near.ack_timeouts + far.ack_timeouts == 0);
}

TEST_CASE("use_future from the main thread while the io_context runs on another: accept, connect, send, receive",
          "[channel][threads]") {
  const auto provider = GENERATE(from_range(bt::providers_here()));
  INFO("over " << bt::to_string(provider));
  const auto uri = bt::uri_for(provider, bt::unique_name("futures"));
  asio::io_context io;
  tally t;
  bellows::acceptor acc(io.get_executor(), uri, counting_options(uri, t));
  auto guard = asio::make_work_guard(io);
  auto ran = std::async(std::launch::async, [&io] { io.run(); });

  auto accepted = acc.async_accept(asio::use_future);
  auto connected = bellows::async_connect(io.get_executor(), uri, counting_options(uri, t), asio::use_future);
  REQUIRE(connected.wait_for(20s) == std::future_status::ready);
  REQUIRE(accepted.wait_for(20s) == std::future_status::ready);
  auto near = connected.get();
  auto far = accepted.get();

  // Large enough to need the largest tier: the peer must answer the enlargement while the
  // main thread waits on a future.
  const auto message = bt::random_bytes(300000, 7);
  std::vector<std::byte> got(message.size());
  auto received = far.async_receive(asio::buffer(got), asio::use_future);
  auto sent = near.async_send(asio::buffer(message), asio::use_future);
  REQUIRE(sent.wait_for(20s) == std::future_status::ready);
  REQUIRE(received.wait_for(20s) == std::future_status::ready);
  CHECK(sent.get() == message.size());
  CHECK(received.get() == message.size());
  CHECK(got == message);
  CHECK(t.ack_timeouts == 0);
  CHECK(bellows::stats(io).enlargements >= 1);

  near.abort();
  far.abort();
  acc.close();
  guard.reset();
  // Nothing pending and an acceptor closed: run() returns by itself, as with sockets.
  const bool returned = ran.wait_for(10s) == std::future_status::ready;
  if (!returned) io.stop();
  CHECK(returned);
}

TEST_CASE("Four threads each open their own channel on one io_context and trade messages", "[channel][threads]") {
  const auto provider = GENERATE(from_range(bt::providers_here()));
  INFO("over " << bt::to_string(provider));
  const auto uri = bt::uri_for(provider, bt::unique_name("four-threads"));
  const int users = 4;
  const int messages = bt::scaled(provider, 20, 5);
  const std::size_t largest = bt::scaled(provider, 1 << 20, 128 << 10);
  asio::io_context io;
  tally echoes, callers;
  bellows::acceptor acc(io.get_executor(), uri, counting_options(uri, echoes));
  asio::co_spawn(
      io,
      [&]() -> asio::awaitable<void> {
        for (int i = 0; i < users; ++i) {
          auto [ec, ch] = co_await acc.async_accept(as_tuple(use_awaitable));
          if (ec) {
            ++echoes.errors;
            co_return;
          }
          const auto ex = ch.get_executor();
          asio::co_spawn(ex, echo(std::move(ch), messages, echoes), asio::detached);
        }
      },
      asio::detached);
  auto guard = asio::make_work_guard(io);
  std::thread runner([&io] { io.run(); });

  auto user = [&](int which) {
    auto connected = bellows::async_connect(io.get_executor(), uri, counting_options(uri, callers), asio::use_future);
    if (connected.wait_for(30s) != std::future_status::ready) return void(++callers.errors);
    auto ch = connected.get();
    std::mt19937_64 rng(which);
    std::vector<std::byte> reply(largest);
    for (int i = 0; i < messages; ++i) {
      const auto message = bt::random_bytes(rng, size_through_tiers(rng, largest));
      auto sent = ch.async_send(asio::buffer(message), asio::use_future);
      auto received = ch.async_receive(asio::buffer(reply), asio::use_future);
      if (sent.wait_for(30s) != std::future_status::ready || received.wait_for(30s) != std::future_status::ready)
        return void(++callers.errors);
      const auto n = received.get();
      const bool same = sent.get() == message.size() && n == message.size() &&
                        std::equal(message.begin(), message.end(), reply.begin());
      ++(same ? callers.intact : callers.wrong);
    }
    ++callers.finished;
  };
  std::vector<std::thread> threads;
  for (int i = 0; i < users; ++i) threads.emplace_back(user, i + 1);
  for (auto& t : threads) t.join();
  const bool echoed = wait_until([&] { return echoes.finished == users; }, 30s);
  guard.reset();
  io.stop();
  runner.join();

  CHECK(echoed);
  CHECK(callers.finished == users);
  CHECK(callers.intact == users * messages);
  CHECK(callers.wrong == 0);
  CHECK(callers.errors + echoes.errors == 0);
  CHECK(callers.ack_timeouts + echoes.ack_timeouts == 0);
}

TEST_CASE("An accept cancelled by || or by a signal leaves the acceptor accepting", "[channel][asio]") {
  const auto provider = GENERATE(from_range(bt::providers_here()));
  INFO("over " << bt::to_string(provider));
  const auto uri = bt::uri_for(provider, bt::unique_name("cancelled-accept"));
  asio::io_context io;
  bellows::acceptor acc(io.get_executor(), uri, bt::options_for(uri));

  std::optional<std::error_code> by_signal;
  asio::cancellation_signal signal;
  acc.async_accept(
      asio::bind_cancellation_slot(signal.slot(), [&](std::error_code ec, bellows::channel) { by_signal = ec; }));
  signal.emit(asio::cancellation_type::terminal);
  REQUIRE(bt::run_until(
      io, [&] { return by_signal.has_value(); }, 5s));
  CHECK(*by_signal == asio::error::operation_aborted);

  std::optional<bool> timer_won;
  asio::co_spawn(
      io,
      [&]() -> asio::awaitable<void> {
        asio::steady_timer timer(io, 20ms);
        auto first = co_await (acc.async_accept(use_awaitable) || timer.async_wait(use_awaitable));
        timer_won = first.index() == 1;
      },
      asio::detached);
  REQUIRE(bt::run_until(
      io, [&] { return timer_won.has_value(); }, 5s));
  CHECK(*timer_won);

  // Both withdrawn accepts left it listening: the next peer is accepted and carries a message.
  std::optional<bellows::channel> near, far;
  REQUIRE(bt::connect_and_accept(io, acc, uri, near, far));
  std::byte hello[1] = {std::byte{9}}, got[1] = {};
  std::optional<std::error_code> sent, received;
  near->async_send(asio::buffer(hello), [&](std::error_code ec, std::size_t) { sent = ec; });
  far->async_receive(asio::buffer(got), [&](std::error_code ec, std::size_t) { received = ec; });
  REQUIRE(bt::run_until(
      io, [&] { return sent && received; }, 10s));
  CHECK(!*sent);
  CHECK(!*received);
  CHECK(got[0] == std::byte{9});
}

TEST_CASE("A connect cancelled before the peer accepted leaves no channel on either side", "[channel][asio]") {
  // Over shm an open waits unread until someone accepts, so the cancellation reaches the
  // acceptor first; over rdma the connection manager accepts at once (see asio_contract_test).
  const auto uri = bt::uri_for(bt::provider::shm, bt::unique_name("cancelled-connect"));
  asio::io_context io;
  bellows::acceptor acc(io.get_executor(), uri, bt::options_for(uri));
  std::optional<std::error_code> cancelled;
  asio::cancellation_signal signal;
  bellows::async_connect(
      io.get_executor(), uri, bt::options_for(uri),
      asio::bind_cancellation_slot(signal.slot(), [&](std::error_code ec, bellows::channel) { cancelled = ec; }));
  // Time for the open to reach the acceptor's socket, so that it is the withdrawal that undoes it.
  bt::run_until(
      io, [] { return false; }, 50ms);
  signal.emit(asio::cancellation_type::terminal);
  REQUIRE(bt::run_until(
      io, [&] { return cancelled.has_value(); }, 5s));
  CHECK(*cancelled == asio::error::operation_aborted);

  std::optional<bellows::channel> far;
  acc.async_accept([&](std::error_code, bellows::channel c) { far = std::move(c); });
  bt::run_until(
      io, [&] { return far.has_value(); }, 300ms);
  CHECK(!far);  // nothing was left for the acceptor to hand out
  CHECK(bellows::stats(io).channels == 0);
}
