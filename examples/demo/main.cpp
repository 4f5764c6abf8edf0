// bellows demo: two processes over shared memory. The parent sends a sweep of message sizes,
// 8 B up to 4 MiB and back down, to a child that echoes each one; then it falls quiet. The
// output shows every tier change with its measured handshake time, the memory each process
// has registered for the channel before, during and after the idle shrink, and how much an
// idle channel holds against a design with a fixed 256 KiB ring per connection.
//   bellows_demo [channels-at-the-end, default 1000]

#include <bellows/bellows.hpp>

#include <asio/co_spawn.hpp>
#include <asio/detached.hpp>
#include <asio/experimental/as_tuple.hpp>
#include <asio/experimental/awaitable_operators.hpp>
#include <asio/io_context.hpp>
#include <asio/steady_timer.hpp>
#include <asio/use_awaitable.hpp>
#include <asio/use_future.hpp>

#include <poll.h>
#include <sys/wait.h>
#include <unistd.h>
#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

using namespace std::chrono_literals;
using asio::use_awaitable;
using asio::experimental::as_tuple;

namespace {

constexpr auto idle_shrink_after = 300ms;
constexpr std::size_t fixed_ring_bytes = 256 * 1024;  // rsocket's per-connection buffer

std::string human(std::uint64_t bytes) {
  char buf[32];
  if (bytes >= (1u << 20) && bytes % (1u << 20) == 0)
    std::snprintf(buf, sizeof buf, "%llu MiB", static_cast<unsigned long long>(bytes >> 20));
  else if (bytes >= 1024 && bytes % 1024 == 0)
    std::snprintf(buf, sizeof buf, "%llu KiB", static_cast<unsigned long long>(bytes >> 10));
  else
    std::snprintf(buf, sizeof buf, "%llu B", static_cast<unsigned long long>(bytes));
  return buf;
}

double micros(std::chrono::nanoseconds t) { return static_cast<double>(t.count()) / 1000.0; }

std::string tier_name(std::uint32_t t) {
  return "tier " + std::to_string(t) + " (" + human(bellows::default_tiers()[t].ring_bytes()) + ")";
}

bellows::channel_options demo_options(bool narrate) {
  bellows::channel_options options;
  options.idle_shrink_after = idle_shrink_after;
  if (!narrate) return options;
  options.on_tier_event = [](const bellows::tier_event& e) {
    using what = bellows::tier_event::what;
    const char* request = e.shrink ? "SHRINK_REQ" : "ENLARGE_REQ";
    switch (e.kind) {
      case what::requested:
        if (e.shrink)
          std::printf("      send    %s %s -> %s after %lld ms without a large message\n", request,
                      tier_name(e.from_tier).c_str(), tier_name(e.to_tier).c_str(),
                      static_cast<long long>(idle_shrink_after / 1ms));
        else
          std::printf("      send    %s %s -> %s for a %s message\n", request, tier_name(e.from_tier).c_str(),
                      tier_name(e.to_tier).c_str(), human(e.message_bytes).c_str());
        break;
      case what::granted:
        std::printf("      send    acknowledged: now writing into the peer's %s, handshake %.1f us\n",
                    tier_name(e.to_tier).c_str(), micros(e.elapsed));
        break;
      case what::denied: std::printf("      send    denied after %.1f us: fragmenting\n", micros(e.elapsed)); break;
      case what::timed_out: std::printf("      send    no acknowledgement in time\n"); break;
      case what::provisioned:
        std::printf("      receive peer asked: registered a %s ring and acknowledged in %.1f us\n",
                    tier_name(e.to_tier).c_str(), micros(e.elapsed));
        break;
      case what::refused: std::printf("      receive peer asked: budget short, denied\n"); break;
    }
  };
  return options;
}

// ---- the child: echoes every message on every channel it accepts ----

asio::awaitable<void> echo(bellows::channel ch, std::size_t* peak_registered) {
  for (;;) {
    auto [ec, view] = co_await ch.async_receive_view(as_tuple(use_awaitable));
    if (ec) break;  // end_of_stream when the parent closes
    // A view of the ring; its slots return to the sender once the echo is written.
    auto [send_ec, n] = co_await ch.async_send(view.buffer(), as_tuple(use_awaitable));
    if (send_ec) break;
    if (peak_registered) *peak_registered = std::max(*peak_registered, ch.stats().registered_bytes);
  }
  if (peak_registered) {
    std::printf("  child process: this channel's registered memory peaked at %s; %s after the shrink\n",
                human(*peak_registered).c_str(), human(ch.stats().registered_bytes).c_str());
    std::fflush(stdout);
  }
  co_await ch.async_close(as_tuple(use_awaitable));
}

int run_child(const std::string& uri, int ready_fd, std::size_t channels) {
  asio::io_context io;
  bellows::acceptor acceptor(io.get_executor(), uri, demo_options(false));
  const char one = 1;
  if (::write(ready_fd, &one, 1) != 1) return 2;
  ::close(ready_fd);
  std::size_t peak = 0;
  asio::co_spawn(
      io,
      [&]() -> asio::awaitable<void> {
        for (std::size_t i = 0; i < channels; ++i) {
          auto [ec, ch] = co_await acceptor.async_accept(as_tuple(use_awaitable));
          if (ec) co_return;
          asio::co_spawn(io, echo(std::move(ch), i == 0 ? &peak : nullptr), asio::detached);
        }
        acceptor.close();
      },
      asio::detached);
  io.run();
  return 0;
}

// ---- the parent: the sweep ----

void print_row(const char* what, const bellows::channel& ch, double round_trip_us = 0) {
  const auto s = ch.stats();
  if (round_trip_us > 0)
    std::printf("  %-9s %9.1f us   send %-18s receive %-18s registered here %s\n", what, round_trip_us,
                tier_name(s.send_tier).c_str(), tier_name(s.receive_tier).c_str(), human(s.registered_bytes).c_str());
  else
    std::printf("  %-22s send %-18s receive %-18s registered here %s\n", what, tier_name(s.send_tier).c_str(),
                tier_name(s.receive_tier).c_str(), human(s.registered_bytes).c_str());
}

asio::awaitable<int> sweep(std::string uri, std::size_t channels) {
  auto ex = co_await asio::this_coro::executor;
  bellows::channel ch = co_await bellows::async_connect(ex, uri, demo_options(true), use_awaitable);
  std::printf("connected; every channel direction starts on %s\n", tier_name(0).c_str());
  print_row("at connect", ch);
  const std::size_t idle_bytes = ch.stats().registered_bytes;

  const std::vector<std::size_t> sizes{8,          64,       1000,     3000,      16 * 1024, 40 * 1024, 100 * 1024,
                                       500 * 1024, 1u << 20, 4u << 20, 64 * 1024, 1000,      8};
  std::printf("\n  message      round trip (send, echo, receive; the handshakes included)\n");
  std::vector<std::byte> message, reply(4u << 20);
  std::uint64_t mismatches = 0, bytes = 0;
  std::size_t peak = 0;
  for (std::size_t size : sizes) {
    message.resize(size);
    for (std::size_t i = 0; i < size; ++i) message[i] = static_cast<std::byte>(i * 131 + size);
    const auto started = std::chrono::steady_clock::now();
    co_await ch.async_send(asio::buffer(message), use_awaitable);
    const std::size_t n = co_await ch.async_receive(asio::buffer(reply), use_awaitable);
    const auto took = std::chrono::steady_clock::now() - started;
    if (n != size || !std::equal(message.begin(), message.end(), reply.begin())) ++mismatches;
    bytes += size;
    peak = std::max(peak, ch.stats().registered_bytes);
    print_row(human(size).c_str(), ch, micros(took));
  }

  std::printf("\nfalls quiet for %lld ms (both sides shrink after %lld ms without a large message)\n",
              static_cast<long long>(3 * idle_shrink_after / 1ms), static_cast<long long>(idle_shrink_after / 1ms));
  {
    // A pending receive keeps this process serving its peer's shrink request while it waits.
    using namespace asio::experimental::awaitable_operators;
    asio::steady_timer quiet(ex, 3 * idle_shrink_after);
    std::byte unexpected[8];
    co_await (ch.async_receive(asio::buffer(unexpected), as_tuple(use_awaitable)) ||
              quiet.async_wait(as_tuple(use_awaitable)));
  }
  print_row("after idle", ch);
  const std::size_t after = ch.stats().registered_bytes;

  // Many idle channels, to measure what each holds when nothing flows.
  std::vector<bellows::channel> more;
  for (std::size_t i = 1; i < channels; ++i)
    more.push_back(co_await bellows::async_connect(ex, uri, demo_options(false), use_awaitable));
  const auto context = bellows::stats(static_cast<asio::io_context&>(ex.query(asio::execution::context)));
  const double per_channel = static_cast<double>(context.registered_bytes) / static_cast<double>(channels);
  std::printf("\n%zu idle channels to the child: %s registered in this process, %.0f B per channel\n", channels,
              human(context.registered_bytes).c_str(), per_channel);

  for (auto& c : more) {
    co_await c.async_close(use_awaitable);
    std::byte none[1];
    co_await c.async_receive(asio::buffer(none), as_tuple(use_awaitable));  // the child's end_of_stream
  }
  co_await ch.async_close(use_awaitable);
  std::byte none[1];
  co_await ch.async_receive(asio::buffer(none), as_tuple(use_awaitable));

  std::printf(
      "\n%zu messages (%s) echoed, %llu mismatches; registered memory per channel and process: %s at connect, "
      "%s at the peak, %s after the idle shrink\n",
      sizes.size(), human(bytes).c_str(), static_cast<unsigned long long>(mismatches), human(idle_bytes).c_str(),
      human(peak).c_str(), human(after).c_str());
  const double fixed = static_cast<double>(fixed_ring_bytes);
  std::printf(
      "idle registered memory %s per channel and side vs %s for a fixed 256 KiB-per-connection design (%.0fx "
      "less); for 10,000 connections %.1f MiB vs %.1f MiB\n",
      human(after).c_str(), human(fixed_ring_bytes).c_str(), fixed / per_channel, per_channel * 10000 / (1 << 20),
      fixed * 10000 / (1 << 20));
  co_return mismatches == 0 && after == idle_bytes ? 0 : 1;
}

}  // namespace

int main(int argc, char** argv) {
  constexpr const char* usage =
      "usage: bellows_demo [CHANNELS]\n"
      "  CHANNELS  idle channels opened for the memory comparison at the end, 1..10000 (default 1000)\n";
  if (argc == 2 && (std::strcmp(argv[1], "--help") == 0 || std::strcmp(argv[1], "-h") == 0)) {
    std::fputs(usage, stdout);
    return 0;
  }
  char* end = argv[argc > 1 ? 1 : 0];
  const std::size_t channels = argc > 1 ? std::strtoul(argv[1], &end, 10) : 1000;
  if (argc > 2 || (argc > 1 && (end == argv[1] || *end != '\0')) || channels < 1 || channels > 10000) {
    std::fprintf(stderr, "bellows_demo: CHANNELS is a number from 1 to 10000\n%s", usage);
    return 2;
  }
  std::setvbuf(stdout, nullptr, _IOLBF, 0);  // the child prints too; keep lines in order
  const std::string uri = "shm://bellows-demo-" + std::to_string(::getpid());
  std::printf("bellows demo: two processes over shared memory (%s)\ntiers:", uri.c_str());
  const auto tiers = bellows::default_tiers();
  for (std::size_t t = 0; t < tiers.size(); ++t)
    std::printf(" %zu = %u x %s (%s)%s", t, tiers[t].slot_count, human(tiers[t].slot_size).c_str(),
                human(tiers[t].ring_bytes()).c_str(), t + 1 < tiers.size() ? "," : "\n");
  std::printf("tier events below are this process's: 'send' is its writing direction, 'receive' its rings\n");
  std::fflush(stdout);

  int ready[2];
  if (::pipe(ready) != 0) return 2;
  const pid_t child = ::fork();
  if (child == 0) {
    ::close(ready[0]);
    ::_exit(run_child(uri, ready[1], channels));
  }
  ::close(ready[1]);
  pollfd p{ready[0], POLLIN, 0};
  char c = 0;
  if (::poll(&p, 1, 10000) != 1 || ::read(ready[0], &c, 1) != 1) {
    std::fprintf(stderr, "the echoing child did not start\n");
    return 2;
  }

  int result = 2;
  try {
    asio::io_context io;
    auto done = asio::co_spawn(io, sweep(uri, channels), asio::use_future);
    io.run();
    result = done.get();
  } catch (const std::exception& e) {
    std::fprintf(stderr, "demo: %s\n", e.what());
    ::kill(child, SIGKILL);
  }
  int status = 0;
  ::waitpid(child, &status, 0);
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) result = result == 0 ? 3 : result;
  return result;
}
