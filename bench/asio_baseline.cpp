// The yardstick a user would write without bellows: Asio C++20 coroutines over a Unix stream
// socket or TCP loopback, each message framed by an 8-byte length. Same modes, sizes and
// output as bellows-perf (lat: half round trip; bw: streaming, then a one-byte answer). The
// options are in `usage` below, which --help prints.

#include "perf/command_line.hpp"
#include "perf/process.hpp"
#include "perf/report.hpp"

#include <asio/co_spawn.hpp>
#include <asio/detached.hpp>
#include <asio/io_context.hpp>
#include <asio/ip/tcp.hpp>
#include <asio/local/stream_protocol.hpp>
#include <asio/read.hpp>
#include <asio/use_awaitable.hpp>
#include <asio/write.hpp>

#include <poll.h>
#include <sys/wait.h>
#include <unistd.h>
#include <array>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

using asio::use_awaitable;
using clock_type = std::chrono::steady_clock;

namespace {

struct settings {
  std::string transport = "unix";
  std::vector<std::string> modes{"lat", "bw"};
  std::vector<std::uint64_t> sizes{8, 64, 512, 4096, 32768, 65536, 262144, 1048576};
  std::uint64_t iterations = 0;
  bool json = false;
  int client_cpu = 0, peer_cpu = 1;
};

constexpr std::uint64_t max_message = std::uint64_t{4} << 20;

std::uint64_t iterations_for(const settings& s, const std::string& mode, std::uint64_t size) {
  return s.iterations ? s.iterations : perf::default_iterations(mode, size);
}

template <class Socket>
asio::awaitable<void> write_message(Socket& socket, const std::vector<std::byte>& payload, std::uint64_t size) {
  const std::array<asio::const_buffer, 2> frame{asio::buffer(&size, sizeof size), asio::buffer(payload.data(), size)};
  co_await asio::async_write(socket, frame, use_awaitable);
}

template <class Socket>
asio::awaitable<std::uint64_t> read_message(Socket& socket, std::vector<std::byte>& into) {
  std::uint64_t size = 0;
  co_await asio::async_read(socket, asio::buffer(&size, sizeof size), use_awaitable);
  if (size > into.size()) throw std::runtime_error("frame larger than the buffer");
  co_await asio::async_read(socket, asio::buffer(into.data(), size), use_awaitable);
  co_return size;
}

/// The peer: the first frame of a connection says "echo" or "sink N", as with bellows-perf.
template <class Socket>
asio::awaitable<void> serve(Socket socket) {
  std::vector<std::byte> buffer(max_message);
  try {
    const auto n = co_await read_message(socket, buffer);
    std::istringstream command(std::string(reinterpret_cast<const char*>(buffer.data()), n));
    std::string role;
    std::uint64_t count = 0;
    command >> role >> count;
    if (role == "echo") {
      for (;;) co_await write_message(socket, buffer, co_await read_message(socket, buffer));
    } else {
      for (std::uint64_t i = 0; i < count; ++i) co_await read_message(socket, buffer);
      co_await write_message(socket, buffer, 1);
    }
  } catch (const std::exception&) {
    // The client closed: the end of this connection's work.
  }
}

template <class Protocol>
asio::awaitable<void> accept_forever(typename Protocol::acceptor& acceptor) {
  for (;;) {
    auto socket = co_await acceptor.async_accept(use_awaitable);
    if constexpr (std::is_same_v<Protocol, asio::ip::tcp>) socket.set_option(asio::ip::tcp::no_delay(true));
    asio::co_spawn(acceptor.get_executor(), serve(std::move(socket)), asio::detached);
  }
}

std::vector<std::byte> role_frame(const std::string& text) {
  const auto* bytes = reinterpret_cast<const std::byte*>(text.data());
  return {bytes, bytes + text.size()};
}

template <class Protocol>
asio::awaitable<typename Protocol::socket> open(typename Protocol::endpoint peer, const std::string& role) {
  typename Protocol::socket socket(co_await asio::this_coro::executor);
  co_await socket.async_connect(peer, use_awaitable);
  if constexpr (std::is_same_v<Protocol, asio::ip::tcp>) socket.set_option(asio::ip::tcp::no_delay(true));
  const auto frame = role_frame(role);
  co_await write_message(socket, frame, frame.size());
  co_return socket;
}

template <class Protocol>
asio::awaitable<void> measure(typename Protocol::endpoint peer, settings s) {
  perf::reporter out(s.json);
  const std::string provider = "asio-" + s.transport;
  for (const auto& mode : s.modes) {
    for (const auto size : s.sizes) {
      const auto iterations = iterations_for(s, mode, size);
      const auto warmup = perf::warmup_for(1000, iterations);
      std::vector<std::byte> message(size, std::byte{1}), reply(max_message);
      perf::result r(mode, provider, size, iterations);
      if (mode == "lat") {
        auto socket = co_await open<Protocol>(peer, "echo");
        std::vector<double> half_trips;
        for (std::uint64_t i = 0; i < warmup + iterations; ++i) {
          const auto t0 = clock_type::now();
          co_await write_message(socket, message, size);
          if (co_await read_message(socket, reply) != size) throw std::runtime_error("echo of another size");
          if (i >= warmup)
            half_trips.push_back(std::chrono::duration<double, std::micro>(clock_type::now() - t0).count() / 2);
        }
        const auto sum = perf::summarize(half_trips);
        r.set_times(sum.p50, sum.avg, sum.p99);
        r.mb_per_s = static_cast<double>(size) / sum.avg;
        r.msg_per_s = 1e6 / sum.avg;
      } else if (mode == "bw") {
        auto socket = co_await open<Protocol>(peer, "sink " + std::to_string(warmup + iterations));
        for (std::uint64_t i = 0; i < warmup; ++i) co_await write_message(socket, message, size);
        const auto t0 = clock_type::now();
        for (std::uint64_t i = 0; i < iterations; ++i) co_await write_message(socket, message, size);
        co_await read_message(socket, reply);
        const double us = std::chrono::duration<double, std::micro>(clock_type::now() - t0).count();
        r.avg_us = us / static_cast<double>(iterations);
        r.mb_per_s = static_cast<double>(size * iterations) / us;
        r.msg_per_s = static_cast<double>(iterations) / us * 1e6;
      } else {
        throw std::invalid_argument("asio-baseline has modes lat and bw, not " + mode);
      }
      out.add(r);
    }
  }
}

template <class Protocol>
int run(const settings& s, typename Protocol::endpoint where) {
  int ready[2];
  if (::pipe(ready) != 0) return 2;
  asio::io_context listening_io;
  typename Protocol::acceptor acceptor(listening_io, where);
  const auto bound = acceptor.local_endpoint();  // TCP: the port the kernel chose
  const pid_t peer = ::fork();
  if (peer == 0) {
    perf::pin_to(s.peer_cpu);
    asio::co_spawn(listening_io, accept_forever<Protocol>(acceptor), asio::detached);
    listening_io.run();
    ::_exit(0);
  }
  acceptor.close();
  perf::pin_to(s.client_cpu);
  asio::io_context io;
  int status = 0;
  asio::co_spawn(io, measure<Protocol>(bound, s), [&](std::exception_ptr e) {
    try {
      if (e) std::rethrow_exception(e);
    } catch (const std::exception& x) {
      std::fprintf(stderr, "asio-baseline: %s\n", x.what());
      status = 1;
    }
  });
  io.run();
  ::kill(peer, SIGKILL);
  ::waitpid(peer, nullptr, 0);
  return status;
}

}  // namespace

constexpr const char* usage =
    R"(usage: asio-baseline [--transport unix|tcp] [-t lat,bw] [-s SIZES] [-n ITERATIONS] [--cpus A,B|none] [--json]
  --transport  a Unix stream socket (default) or TCP over loopback
  -t           lat (ping-pong, half round trip) and/or bw (streaming); default both
  -s           comma-separated bytes, 1 B to 4 MiB, with K or M suffixes: 8,64K,1M
  --cpus       the CPUs the measuring process and its forked peer are pinned to (default 0,1)
  --json       one JSON object per figure, as bellows-perf prints them
)";

int main(int argc, char** argv) {
  settings s;
  try {
    for (int i = 1; i < argc; ++i) {
      const std::string flag = argv[i];
      if (flag == "--help" || flag == "-h") {
        std::fputs(usage, stdout);
        return 0;
      }
      if (flag == "--json") {
        s.json = true;
        continue;
      }
      if (i + 1 >= argc) throw std::invalid_argument(flag + " needs a value");
      const std::string value = argv[++i];
      if (flag == "--transport")
        s.transport = value;
      else if (flag == "-t")
        s.modes = perf::parse_list<std::string>(value, [](const std::string& m) {
          if (m != "lat" && m != "bw") throw std::invalid_argument("unknown mode " + m);
          return m;
        });
      else if (flag == "-s")
        s.sizes = perf::parse_list<std::uint64_t>(value, perf::parse_quantity);
      else if (flag == "-n")
        s.iterations = perf::parse_quantity(value);
      else if (flag == "--cpus" && value == "none")
        s.client_cpu = s.peer_cpu = -1;
      else if (flag == "--cpus" && std::sscanf(value.c_str(), "%d,%d", &s.client_cpu, &s.peer_cpu) == 2)
        continue;
      else
        throw std::invalid_argument("unknown option " + flag + " " + value);
    }
    for (const auto size : s.sizes)
      if (size == 0 || size > max_message) throw std::invalid_argument("sizes go from 1 B to 4 MiB");
    if (s.transport == "tcp") return run<asio::ip::tcp>(s, {asio::ip::make_address("127.0.0.1"), 0});
    if (s.transport == "unix") {
      const std::string path = "/tmp/asio-baseline-" + std::to_string(::getpid()) + ".sock";
      ::unlink(path.c_str());
      const int status = run<asio::local::stream_protocol>(s, asio::local::stream_protocol::endpoint(path));
      ::unlink(path.c_str());
      return status;
    }
    throw std::invalid_argument("--transport is unix or tcp");
  } catch (const std::exception& e) {
    std::fprintf(stderr, "asio-baseline: %s\n%s", e.what(), usage);
    return 2;
  }
}
