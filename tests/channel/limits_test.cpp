// Behaviour at the limits: a message far larger than any tier (fragmented through the largest
// ring, 1 GiB over shm), a message above the channel's max_message_size, and a process at its
// descriptor limit, as the connecting side and as the accepting side.

#include "support/messages.hpp"
#include "support/peers.hpp"
#include "support/processes.hpp"
#include "support/provider.hpp"
#include "support/run_until.hpp"
#include "support/sanitizers.hpp"

#include <bellows/bellows.hpp>

#include <asio/co_spawn.hpp>
#include <asio/detached.hpp>
#include <asio/experimental/as_tuple.hpp>
#include <asio/io_context.hpp>
#include <asio/steady_timer.hpp>
#include <asio/use_awaitable.hpp>
#include <asio/use_future.hpp>

#include <catch2/catch.hpp>

#include <fcntl.h>
#include <sys/resource.h>
#include <unistd.h>
#include <algorithm>
#include <cstring>
#include <filesystem>
#include <future>
#include <optional>

using namespace std::chrono_literals;
using asio::use_awaitable;
using asio::experimental::as_tuple;
namespace bt = bellows::test;

namespace {

std::uint64_t digest(const std::byte* data, std::size_t size) {
  std::uint64_t h = 0xcbf29ce484222325;
  std::size_t i = 0;
  for (; i + 8 <= size; i += 8) {
    std::uint64_t word;
    std::memcpy(&word, data + i, 8);
    h = (h ^ word) * 0x100000001b3;
  }
  for (; i < size; ++i) h = (h ^ static_cast<std::uint64_t>(data[i])) * 0x100000001b3;
  return h;
}

/// A cheap pattern (a 1 GiB Mersenne-twister stream would take seconds under the sanitizers).
std::vector<std::byte> pattern(std::size_t size) {
  std::vector<std::byte> out(size);
  std::uint64_t x = 0x9e3779b97f4a7c15;
  for (std::size_t i = 0; i + 8 <= size; i += 8) {
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    std::memcpy(out.data() + i, &x, 8);
  }
  return out;
}

/// ARGS: digest-peer URI SIZE. Accepts one channel, receives one message of up to SIZE bytes
/// into a buffer of exactly that size and answers with its length and digest.
int run_digest_peer(const std::vector<std::string>& args) {
  const std::string uri = args.at(1);
  const std::size_t size = std::stoull(args.at(2));
  asio::io_context io;
  bellows::acceptor acc(io.get_executor(), uri, bt::options_for(uri));
  bt::child_process::signal_ready();
  int verdict = 1;
  asio::co_spawn(
      io,
      [&]() -> asio::awaitable<void> {
        bellows::channel ch = co_await acc.async_accept(use_awaitable);
        std::vector<std::byte> inbox(size);
        const std::size_t n = co_await ch.async_receive(asio::buffer(inbox), use_awaitable);
        const std::uint64_t answer[2] = {n, digest(inbox.data(), n)};
        co_await ch.async_send(asio::buffer(answer, sizeof answer), use_awaitable);
        auto [ec, m] = co_await ch.async_receive(asio::buffer(inbox.data(), 1), as_tuple(use_awaitable));
        verdict = ec == bellows::error::end_of_stream ? 0 : 2;
        co_await ch.async_close(as_tuple(use_awaitable));
        io.stop();
      },
      asio::detached);
  io.run_for(120s);
  return verdict;
}

const bt::child_role digest_peer("digest-peer", run_digest_peer);

}  // namespace

TEST_CASE("A message of 1 GiB (256 MiB over tcp, 16 MiB over rdma) arrives intact, straight into the receive's buffer",
          "[channel][limits]") {
  const auto provider = GENERATE(from_range(bt::providers_here()));
  INFO("over " << bt::to_string(provider));
  const std::size_t size = provider == bt::provider::shm   ? std::size_t{1} << 30
                           : provider == bt::provider::tcp ? std::size_t{256} << 20
                                                           : std::size_t{16} << 20;
  const auto uri = bt::uri_for(provider, bt::unique_name("huge"));
  auto peer = bt::child_process::exec_self(digest_peer, {uri, std::to_string(size)});
  REQUIRE(peer.wait_ready());

  const auto message = pattern(size);
  asio::io_context io;
  std::uint64_t answer[2] = {};
  std::optional<std::error_code> end;
  bellows::channel_stats stats;
  asio::co_spawn(
      io,
      [&]() -> asio::awaitable<void> {
        auto ch = co_await bellows::async_connect(io.get_executor(), uri, bt::options_for(uri), use_awaitable);
        co_await ch.async_send(asio::buffer(message), use_awaitable);
        co_await ch.async_receive(asio::buffer(answer, sizeof answer), use_awaitable);
        stats = ch.stats();
        co_await ch.async_close(use_awaitable);
        auto [ec, n] = co_await ch.async_receive(asio::buffer(answer, 1), as_tuple(use_awaitable));
        end = ec;
      },
      [](std::exception_ptr e) {
        if (e) std::rethrow_exception(e);
      });
  bt::run_until(
      io, [&] { return end.has_value(); }, 100s);
  CHECK(answer[0] == size);
  CHECK(answer[1] == digest(message.data(), size));
  const bool direct = provider != bt::provider::shm || bt::processes_read_each_other();
  if (direct) {
    // Offered and placed into the peer's posted buffer (shm: read from ours by the peer): no
    // ring had to grow for it.
    CHECK(stats.direct_messages_sent == 1);
    CHECK(stats.send_tier == 0);
  } else {
    CHECK(stats.direct_messages_sent == 0);
    CHECK(stats.send_tier == bellows::default_tiers().size() - 1);
  }
  INFO("after close: " << (end ? end->message() : "pending"));
  CHECK(end == bellows::error::end_of_stream);
  CHECK(peer.wait() == 0);
}

TEST_CASE("A send above max_message_size fails with message_size and the channel carries on", "[channel][limits]") {
  const auto provider = GENERATE(from_range(bt::providers_here()));
  INFO("over " << bt::to_string(provider));
  const auto uri = bt::uri_for(provider, bt::unique_name("too-big"));
  auto server = bt::start_echo_server(uri, 1);
  REQUIRE(server.wait_ready());
  asio::io_context io;
  std::error_code too_big;
  std::size_t too_big_bytes = 1;
  int intact = 0;
  bool done = false;
  asio::co_spawn(
      io,
      [&]() -> asio::awaitable<void> {
        auto options = bt::options_for(uri);
        options.max_message_size = 1 << 20;
        auto ch = co_await bellows::async_connect(io.get_executor(), uri, options, use_awaitable);
        const auto large = bt::random_bytes((1 << 20) + 1, 1);
        std::tie(too_big, too_big_bytes) = co_await ch.async_send(asio::buffer(large), as_tuple(use_awaitable));
        std::error_code try_ec;
        CHECK(ch.try_send(asio::buffer(large), try_ec) == bellows::send_status::no_credits);
        CHECK(try_ec == bellows::error::message_size);
        std::vector<std::byte> reply(1 << 20);
        for (std::size_t size : {100u, 1u << 20}) {
          const auto message = bt::random_bytes(size, size);
          co_await ch.async_send(asio::buffer(message), use_awaitable);
          const auto n = co_await ch.async_receive(asio::buffer(reply), use_awaitable);
          if (n == size && std::equal(message.begin(), message.end(), reply.begin())) ++intact;
        }
        co_await ch.async_close(use_awaitable);
        // The peer's own close completes only once this side has consumed it.
        auto [end, n] = co_await ch.async_receive(asio::buffer(reply), as_tuple(use_awaitable));
        done = end == bellows::error::end_of_stream;
      },
      [](std::exception_ptr e) {
        if (e) std::rethrow_exception(e);
      });
  bt::run_until(
      io, [&] { return done; }, 20s);
  CHECK(too_big == bellows::error::message_size);
  CHECK(too_big_bytes == 0);
  CHECK(intact == 2);
  CHECK(server.wait() == 0);
}

namespace {

/// Leaves this process exactly `spare` free descriptors. The limit bounds descriptor numbers,
/// not their count, so the holes below the highest one are filled first (with /dev/null,
/// kept open for the rest of this child's life).
void limit_descriptors(std::size_t spare) {
  int highest = 0;
  for (const auto& entry : std::filesystem::directory_iterator("/proc/self/fd"))
    highest = std::max(highest, std::stoi(entry.path().filename().string()));
  for (;;) {
    const int filler = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
    if (filler < 0) std::abort();
    if (filler > highest) {
      ::close(filler);
      break;
    }
  }
  const auto limit = static_cast<rlim_t>(highest + 1 + static_cast<int>(spare));
  const rlimit low{limit, limit};
  if (::setrlimit(RLIMIT_NOFILE, &low) != 0) std::abort();
}

/// Opens `count` channels to `uri` one after another; stops at the first error, kept in `ec`.
std::vector<bellows::channel> open_channels(asio::io_context& io, const std::string& uri, int count,
                                            std::error_code& ec) {
  std::vector<bellows::channel> open;
  asio::co_spawn(
      io,
      [&]() -> asio::awaitable<void> {
        for (int i = 0; i < count && !ec; ++i) {
          auto [e, ch] =
              co_await bellows::async_connect(io.get_executor(), uri, bt::options_for(uri), as_tuple(use_awaitable));
          ec = e;
          if (!e) open.push_back(std::move(ch));
        }
      },
      asio::detached);
  bt::run_until(
      io, [&] { return open.size() == static_cast<std::size_t>(count) || ec; }, 10s);
  return open;
}

/// In a child at its descriptor limit: 100 channels to the first peer, then a connect to the
/// second peer fails with too_many_files_open, and the first peer's channels still work and
/// can still be added to (descriptors grow with peers, not with channels). Exit 0 if so.
int run_connector_at_limit(const std::string& first, const std::string& second) {
  asio::io_context io;
  std::error_code first_ec;
  std::vector<bellows::channel> open = open_channels(io, first, 100, first_ec);
  if (open.size() != 100) return 10;
  limit_descriptors(2);
  std::optional<std::error_code> refused;
  bellows::async_connect(io.get_executor(), second, bt::options_for(second),
                         [&](std::error_code ec, bellows::channel) { refused = ec; });
  bt::run_until(
      io, [&] { return refused.has_value(); }, 10s);
  if (refused != std::errc::too_many_files_open) {
    std::fprintf(stderr, "connect at the limit: %s\n", refused ? refused->message().c_str() : "pending");
    return 11;
  }
  std::error_code more_ec;
  std::vector<bellows::channel> more = open_channels(io, first, 100, more_ec);
  if (more.size() != 100) {
    std::fprintf(stderr, "channels to the first peer at the limit: %zu, then %s\n", more.size(),
                 more_ec.message().c_str());
    return 12;
  }
  int echoed = 0;
  asio::co_spawn(
      io,
      [&]() -> asio::awaitable<void> {
        const auto hello = bt::random_bytes(5000, 5);
        std::vector<std::byte> reply(5000);
        co_await more.back().async_send(asio::buffer(hello), use_awaitable);
        co_await more.back().async_receive(asio::buffer(reply), use_awaitable);
        echoed = reply == hello ? 1 : 0;
      },
      asio::detached);
  bt::run_until(
      io, [&] { return echoed == 1; }, 10s);
  return echoed == 1 ? 0 : 13;
}

}  // namespace

TEST_CASE("At its descriptor limit a process's new peer is refused with too_many_files_open, old peers carry on",
          "[shm][limits]") {
  if (bt::sanitized) {
    // Their runtime needs descriptors of its own (a pipe to probe memory when it checks a
    // dynamic type) and reports false errors without them; the other builds run this.
    return bt::skip_case("descriptor limit not tested under a sanitizer");
  }
  const auto first = "shm://" + bt::unique_name("fd-first");
  const auto second = "shm://" + bt::unique_name("fd-second");
  auto first_server = bt::start_echo_server(first, 200);
  auto second_server = bt::start_echo_server(second, 1);
  REQUIRE(first_server.wait_ready());
  REQUIRE(second_server.wait_ready());
  bt::child_process connector([&] { return run_connector_at_limit(first, second); });
  CHECK(connector.wait(60s) == 0);
}

namespace {

/// ARGS: echo-at-limit URI. Echoes on every channel it accepts; once the first link is up it
/// lowers its descriptor limit so that no further link fits.
int run_echo_at_limit(const std::vector<std::string>& args) {
  const std::string uri = args.at(1);
  asio::io_context io;
  bellows::acceptor acc(io.get_executor(), uri, bt::options_for(uri));
  bt::child_process::signal_ready();
  bt::echo_result echo;
  asio::co_spawn(
      io,
      [&]() -> asio::awaitable<void> {
        bellows::channel first = co_await acc.async_accept(use_awaitable);
        limit_descriptors(0);
        asio::co_spawn(io, bt::echo_channel(std::move(first), echo, 1, io), asio::detached);
        for (;;) co_await acc.async_accept(use_awaitable);  // none can arrive at the limit
      },
      asio::detached);
  io.run_for(30s);
  return echo.channels_done == 1 && echo.failures == 0 ? 0 : 10;
}

const bt::child_role echo_at_limit("echo-at-limit", run_echo_at_limit);

}  // namespace

TEST_CASE("An acceptor at its descriptor limit turns new peers away at once and serves its old ones", "[shm][limits]") {
  if (bt::sanitized) {
    // Their runtime needs descriptors of its own (a pipe to probe memory when it checks a
    // dynamic type) and reports false errors without them; the other builds run this.
    return bt::skip_case("descriptor limit not tested under a sanitizer");
  }
  const auto uri = "shm://" + bt::unique_name("fd-server");
  auto server = bt::child_process::exec_self(echo_at_limit, {uri});
  REQUIRE(server.wait_ready());
  asio::io_context io;
  auto connecting = bellows::async_connect(io.get_executor(), uri, bt::options_for(uri), asio::use_future);
  bt::run_until(
      io, [&] { return connecting.wait_for(0s) == std::future_status::ready; }, 10s);
  bellows::channel ch = connecting.get();

  // The server lowers its limit before it echoes anything: one echo first, so that the newcomer
  // below cannot arrive while the server is still between its accept and its limit.
  const auto hello = bt::random_bytes(100, 1);
  std::vector<std::byte> hello_back(hello.size());
  auto hello_sent = ch.async_send(asio::buffer(hello), asio::use_future);
  auto hello_echoed = ch.async_receive(asio::buffer(hello_back), asio::use_future);
  bt::run_until(
      io, [&] { return hello_echoed.wait_for(0s) == std::future_status::ready; }, 10s);
  REQUIRE(hello_sent.get() == hello.size());
  REQUIRE(hello_echoed.get() == hello.size());

  // Another process is turned away: its connect fails promptly instead of waiting forever.
  bt::child_process newcomer([&] {
    asio::io_context other;
    std::optional<std::error_code> result;
    bellows::async_connect(other.get_executor(), uri, [&](std::error_code ec, bellows::channel) { result = ec; });
    bt::run_until(
        other, [&] { return result.has_value(); }, 5s);
    if (result && *result) return 0;
    std::fprintf(stderr, "newcomer: %s\n", result ? "connected" : "still waiting");
    return 1;
  });
  CHECK(newcomer.wait(10s) == 0);

  int intact = 0;
  bool closed = false;
  asio::co_spawn(
      io,
      [&]() -> asio::awaitable<void> {
        std::vector<std::byte> reply(100'000);
        for (std::size_t size : {100u, 100'000u}) {
          const auto message = bt::random_bytes(size, size);
          co_await ch.async_send(asio::buffer(message), use_awaitable);
          const auto n = co_await ch.async_receive(asio::buffer(reply), use_awaitable);
          if (n == size && std::equal(message.begin(), message.end(), reply.begin())) ++intact;
        }
        co_await ch.async_close(use_awaitable);
        // The peer's own close completes only once this side has consumed it.
        auto [end, n] = co_await ch.async_receive(asio::buffer(reply), as_tuple(use_awaitable));
        closed = end == bellows::error::end_of_stream;
      },
      asio::detached);
  bt::run_until(
      io, [&] { return closed; }, 10s);
  CHECK(intact == 2);
  CHECK(server.wait() == 0);
}

namespace {

/// What one idle channel registers on each side: a 128 B control block and a 4 KiB first ring.
constexpr std::size_t registered_per_channel = 128 + 4096;

}  // namespace

TEST_CASE("The channel count is bounded by the budget: one more channel is refused with budget_exhausted",
          "[shm][limits]") {
  const bool limit_here = GENERATE(true, false);  // this side's budget, or the accepting peer's
  INFO((limit_here ? "this side's budget" : "the peer's budget"));
  constexpr int fits = 10;
  const auto uri = "shm://" + bt::unique_name("count");
  auto server = bt::start_echo_server(uri, fits + 1, limit_here ? 0 : fits * registered_per_channel);
  REQUIRE(server.wait_ready());
  asio::io_context io;
  if (limit_here) {
    bellows::context_options options;
    options.registered_memory_budget = fits * registered_per_channel;
    bellows::configure(io, options);
  }
  std::error_code ec;
  std::vector<bellows::channel> open = open_channels(io, uri, fits + 1, ec);
  CHECK(open.size() == fits);
  CHECK(ec == bellows::error::budget_exhausted);

  // The open channels work, and closing one makes room for another.
  bool reopened = false;
  asio::co_spawn(
      io,
      [&]() -> asio::awaitable<void> {
        const auto hello = bt::random_bytes(1000, 3);
        std::vector<std::byte> reply(1000);
        co_await open.front().async_send(asio::buffer(hello), use_awaitable);
        co_await open.front().async_receive(asio::buffer(reply), use_awaitable);
        CHECK(reply == hello);
        co_await open.front().async_close(use_awaitable);
        co_await open.front().async_receive(asio::buffer(reply), as_tuple(use_awaitable));
        open.erase(open.begin());
        // The freed memory returns once the peer has detached as well.
        for (int attempt = 0; attempt < 100 && !reopened; ++attempt) {
          auto [e, ch] =
              co_await bellows::async_connect(io.get_executor(), uri, bt::options_for(uri), as_tuple(use_awaitable));
          if (!e) {
            open.push_back(std::move(ch));
            reopened = true;
          } else {
            asio::steady_timer wait(io, 10ms);
            co_await wait.async_wait(use_awaitable);
          }
        }
      },
      [](std::exception_ptr e) {
        if (e) std::rethrow_exception(e);
      });
  bt::run_until(
      io, [&] { return reopened; }, 10s);
  CHECK(reopened);
  CHECK(open.size() == fits);
}
