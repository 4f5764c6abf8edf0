// First benchmark between two processes: 8 B ping-pong latency (half round trip, p50 and
// average) and 64 KiB streaming bandwidth. Prints figures, asserts nothing. By default it
// forks its peer and talks to it over shm; across hosts, run the peer with --serve on one and
// the measurement with --connect on the other (same --iterations and --messages on both).
//   bellows_bench [--iterations N] [--messages N] [--stream-size BYTES] [--cpus A,B|none]
//                 [--serve URI | --connect URI]     e.g. --serve rdma://0.0.0.0:7471

#include <bellows/bellows.hpp>

#include <asio/co_spawn.hpp>
#include <asio/detached.hpp>
#include <asio/experimental/as_tuple.hpp>
#include <asio/io_context.hpp>
#include <asio/use_awaitable.hpp>

#include <sched.h>
#include <sys/wait.h>
#include <unistd.h>
#include <algorithm>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

using asio::use_awaitable;
using clock_type = std::chrono::steady_clock;

namespace {

struct settings {
  int iterations = 100'000;
  int messages = 20'000;
  std::size_t latency_size = 8;
  std::size_t stream_size = 64 * 1024;
  int sender_cpu = 0;  ///< -1: leave placement to the kernel
  int peer_cpu = 1;
  std::string serve;    ///< be only the peer, listening here
  std::string connect;  ///< only measure, against a peer listening here
};

std::string scheme_of(const std::string& uri) { return uri.substr(0, uri.find(':')); }

/// Pins the calling process to one CPU, as ucx_perftest -c does, so that the two spinning
/// processes never share a core and the figures do not depend on the scheduler's mood.
void pin_to(int cpu) {
  if (cpu < 0) return;
  cpu_set_t set;
  CPU_ZERO(&set);
  CPU_SET(cpu, &set);
  if (::sched_setaffinity(0, sizeof set, &set) != 0) std::perror("bellows_bench: sched_setaffinity");
}

/// The peer: answers every ping with a pong on the first channel; on the second channel receives
/// every streamed message into a buffer and answers the last with one byte.
int run_peer(const std::string& uri, const settings& s, int ready_fd) {
  asio::io_context io;
  bellows::acceptor acc(io.get_executor(), uri);
  const char one = 1;
  if (ready_fd >= 0) [[maybe_unused]]
    auto w = ::write(ready_fd, &one, 1);
  asio::co_spawn(
      io,
      [&]() -> asio::awaitable<void> {
        bellows::channel ping = co_await acc.async_accept(use_awaitable);
        std::vector<std::byte> buffer(s.latency_size);
        for (int i = 0; i < s.iterations + 1000; ++i) {
          const auto n = co_await ping.async_receive(asio::buffer(buffer), use_awaitable);
          co_await ping.async_send(asio::buffer(buffer.data(), n), use_awaitable);
        }
        bellows::channel stream = co_await acc.async_accept(use_awaitable);
        // Copied out into a buffer, as ucx_perftest's tag_bw receives, not read in place.
        std::vector<std::byte> block(s.stream_size);
        for (int i = 0; i < s.messages; ++i) co_await stream.async_receive(asio::buffer(block), use_awaitable);
        co_await stream.async_send(asio::buffer(&one, 1), use_awaitable);
        std::vector<std::byte> tail(1);
        co_await stream.async_receive(asio::buffer(tail), asio::experimental::as_tuple(use_awaitable));
      },
      asio::detached);
  io.run();
  return 0;
}

asio::awaitable<void> measure(std::string uri, settings s) {
  auto ex = co_await asio::this_coro::executor;
  bellows::channel ping = co_await bellows::async_connect(ex, uri, use_awaitable);
  std::vector<std::byte> message(s.latency_size, std::byte{1}), reply(s.latency_size);
  std::vector<double> half_trips;
  half_trips.reserve(s.iterations);
  for (int i = 0; i < s.iterations + 1000; ++i) {  // the first 1000 warm up
    const auto t0 = clock_type::now();
    co_await ping.async_send(asio::buffer(message), use_awaitable);
    co_await ping.async_receive(asio::buffer(reply), use_awaitable);
    const auto t1 = clock_type::now();
    if (i >= 1000) half_trips.push_back(std::chrono::duration<double, std::micro>(t1 - t0).count() / 2);
  }
  std::sort(half_trips.begin(), half_trips.end());
  double sum = 0;
  for (double v : half_trips) sum += v;
  const auto provider = scheme_of(uri);
  std::printf("bellows %-4s lat  %6zu B  p50 %8.3f us  avg %8.3f us  (%d round trips, half round trip)\n",
              provider.c_str(), s.latency_size, half_trips[half_trips.size() / 2],
              sum / static_cast<double>(half_trips.size()), s.iterations);

  bellows::channel stream = co_await bellows::async_connect(ex, uri, use_awaitable);
  std::vector<std::byte> block(s.stream_size, std::byte{7});
  const auto t0 = clock_type::now();
  for (int i = 0; i < s.messages; ++i) co_await stream.async_send(asio::buffer(block), use_awaitable);
  std::byte done[1];
  co_await stream.async_receive(asio::buffer(done), use_awaitable);
  const double seconds = std::chrono::duration<double>(clock_type::now() - t0).count();
  const double bytes = static_cast<double>(s.stream_size) * s.messages;
  std::printf("bellows %-4s bw   %6zu B  %10.1f MB/s  %10.0f msg/s  (%d messages; send tier %u)\n", provider.c_str(),
              s.stream_size, bytes / seconds / 1e6, s.messages / seconds, s.messages, stream.stats().send_tier);
  co_await stream.async_close(use_awaitable);
}

}  // namespace

int main(int argc, char** argv) {
  settings s;
  for (int i = 1; i + 1 < argc; i += 2) {
    if (std::strcmp(argv[i], "--iterations") == 0) s.iterations = std::stoi(argv[i + 1]);
    if (std::strcmp(argv[i], "--messages") == 0) s.messages = std::stoi(argv[i + 1]);
    if (std::strcmp(argv[i], "--stream-size") == 0) s.stream_size = std::stoul(argv[i + 1]);
    if (std::strcmp(argv[i], "--serve") == 0) s.serve = argv[i + 1];
    if (std::strcmp(argv[i], "--connect") == 0) s.connect = argv[i + 1];
    if (std::strcmp(argv[i], "--cpus") == 0) {
      // "A,B": the measuring process on A, the peer on B; "none" to not pin.
      if (std::strcmp(argv[i + 1], "none") == 0) {
        s.sender_cpu = s.peer_cpu = -1;
      } else if (std::sscanf(argv[i + 1], "%d,%d", &s.sender_cpu, &s.peer_cpu) != 2) {
        std::fprintf(stderr, "bellows_bench: --cpus takes A,B or none\n");
        return 2;
      }
    }
  }
  if (!s.serve.empty()) return run_peer(s.serve, s, -1);
  if (!s.connect.empty()) {
    asio::io_context io;
    asio::co_spawn(io, measure(s.connect, s), [](std::exception_ptr e) {
      if (e) std::rethrow_exception(e);
    });
    io.run();
    return 0;
  }
  const std::string uri = "shm://bench-" + std::to_string(::getpid());
  int ready[2];
  if (::pipe(ready) != 0) return 1;
  const pid_t peer = ::fork();
  if (peer == 0) {
    ::close(ready[0]);
    pin_to(s.peer_cpu);
    ::_exit(run_peer(uri, s, ready[1]));
  }
  pin_to(s.sender_cpu);
  ::close(ready[1]);
  char c;
  if (::read(ready[0], &c, 1) != 1) return 1;
  asio::io_context io;
  asio::co_spawn(io, measure(uri, s), [](std::exception_ptr e) {
    if (e) std::rethrow_exception(e);
  });
  io.run();
  // The figures are out; the peer has nothing left to prove.
  ::kill(peer, SIGKILL);
  ::waitpid(peer, nullptr, 0);
  return 0;
}
