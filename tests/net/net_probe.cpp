// The two ends of the network fault tests (faults.sh), each run in its own network namespace:
//
//   net_probe serve URI [--peer-timeout-ms T]
//       accepts channels at URI and echoes every message back; prints "ready" once listening.
//   net_probe drive URI [--messages N] [--peer-timeout-ms T]
//       sends N stamped messages of every tier (N = 0: until the channel fails), checks each echo
//       is the message it sent, intact and in order; prints "echoed K" every 20 echoes.
//   net_probe idle URI [--peer-timeout-ms T]
//       one exchange, then a receive that only the link's death can end; prints "idle".
//
// An operation that fails prints what failed, the error, how long after the last echo, and when
// (steady clock);
// the status is 3 for connection_reset, 1 for any other error or a wrong echo, 4 when a
// drive does not finish within its two minutes. The script judges the timing.

#include "support/echo.hpp"
#include "support/messages.hpp"

#include <bellows/bellows.hpp>

#include <asio/co_spawn.hpp>
#include <asio/detached.hpp>
#include <asio/experimental/as_tuple.hpp>
#include <asio/io_context.hpp>
#include <asio/use_awaitable.hpp>

#include <chrono>
#include <cstdio>
#include <iostream>
#include <string>
#include <vector>

namespace bt = bellows::test;
using asio::use_awaitable;
using asio::experimental::as_tuple;
using namespace std::chrono_literals;

namespace {

constexpr int status_reset = 3;
constexpr int status_unfinished = 4;
/// One of every tier of the default table, and one message that is fragmented; the smallest
/// is the stamp alone.
constexpr std::size_t size_cycle[] = {bt::stamp_bytes, 100, 3'000, 20'000, 70'000, 300'000, 1'200'000};

struct probe {
  asio::io_context io;
  bellows::channel_options channel;
  int status = 0;
  std::uint64_t echoed = 0;
  std::chrono::steady_clock::time_point last_echo = std::chrono::steady_clock::now();

  void failed(const char* what, const std::error_code& ec) {
    const auto now = std::chrono::steady_clock::now();
    const auto since = std::chrono::duration_cast<std::chrono::milliseconds>(now - last_echo);
    // The clock reading lets a script compare two processes' failures on one machine.
    const auto at = std::chrono::duration_cast<std::chrono::milliseconds>(now.time_since_epoch());
    std::cout << "net_probe: " << what << " failed after " << echoed << " echoes: " << ec.message() << " ("
              << ec.category().name() << ':' << ec.value() << "), " << since.count() << " ms after the last echo, at "
              << at.count() << " ms" << std::endl;
    status = ec == bellows::error::connection_reset ? status_reset : 1;
  }
};

asio::awaitable<void> echo(bellows::channel ch) {
  const bt::echo_end end = co_await bt::echo_until_end(ch);
  if (end.failed != nullptr) std::cerr << "net_probe serve: " << end.failed << " failed: " << end.ec.message() << "\n";
}

asio::awaitable<void> serve(probe& p, bellows::acceptor& acceptor) {
  const auto executor = co_await asio::this_coro::executor;
  for (;;) {
    auto [ec, ch] = co_await acceptor.async_accept(as_tuple(use_awaitable));
    if (ec) {
      std::cerr << "net_probe serve: accept failed: " << ec.message() << "\n";
      p.status = 1;
      co_return;
    }
    asio::co_spawn(executor, echo(std::move(ch)), asio::detached);
  }
}

/// One message out and its echo back; false (with p.status set) when either failed.
asio::awaitable<bool> exchange(probe& p, bellows::channel& ch, std::vector<std::byte>& out, std::size_t size) {
  bt::fill_stamped(out, 1, p.echoed, size);
  auto [send_ec, sent] = co_await ch.async_send(asio::buffer(out), as_tuple(use_awaitable));
  if (send_ec) {
    p.failed("send", send_ec);
    co_return false;
  }
  auto [ec, view] = co_await ch.async_receive_view(as_tuple(use_awaitable));
  if (ec) {
    p.failed("receive", ec);
    co_return false;
  }
  if (!bt::is_stamped(view.data(), 1, p.echoed, size)) {
    std::cout << "net_probe: echo " << p.echoed << " (" << view.size() << " B) is not the message sent (" << size
              << " B)" << std::endl;
    p.status = 1;
    co_return false;
  }
  ++p.echoed;
  p.last_echo = std::chrono::steady_clock::now();
  co_return true;
}

asio::awaitable<void> drive(probe& p, std::string uri, std::uint64_t messages, bool then_idle) {
  auto [ec, ch] = co_await bellows::async_connect(p.io.get_executor(), uri, p.channel, as_tuple(use_awaitable));
  if (ec) {
    p.failed("connect", ec);
    co_return;
  }
  std::vector<std::byte> out;
  std::uint64_t bytes = 0;
  for (std::uint64_t i = 0; messages == 0 || i < messages; ++i) {
    const std::size_t size = size_cycle[i % std::size(size_cycle)];
    if (!co_await exchange(p, ch, out, size)) co_return;
    bytes += size;
    if (p.echoed % 20 == 0) std::cout << "echoed " << p.echoed << std::endl;
  }
  if (!then_idle) {
    std::cout << "delivered " << messages << " messages (" << bytes / 1024 << " KiB) intact and in order" << std::endl;
    co_await ch.async_close(as_tuple(use_awaitable));
    co_return;
  }
  std::cout << "idle" << std::endl;
  auto [receive_ec, view] = co_await ch.async_receive_view(as_tuple(use_awaitable));
  if (receive_ec) {
    p.failed("idle receive", receive_ec);
    co_return;
  }
  std::cout << "net_probe: a message arrived on an idle channel" << std::endl;
  p.status = 1;
}

int usage() {
  std::cerr << "usage: net_probe serve|drive|idle URI [--messages N] [--peer-timeout-ms T]\n";
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 3) return usage();
  const std::string mode = argv[1], uri = argv[2];
  std::uint64_t messages = 140;
  std::chrono::milliseconds peer_timeout = 15s;
  for (int i = 3; i + 1 < argc; i += 2) {
    const std::string flag = argv[i];
    try {
      if (flag == "--messages")
        messages = std::stoull(argv[i + 1]);
      else if (flag == "--peer-timeout-ms")
        peer_timeout = std::chrono::milliseconds(std::stoll(argv[i + 1]));
      else
        return usage();
    } catch (const std::exception&) {
      return usage();
    }
  }
  if (argc % 2 == 0 || (mode != "serve" && mode != "drive" && mode != "idle")) return usage();

  probe p;
  bellows::context_options context;
  context.peer_timeout = peer_timeout;
  bellows::configure(p.io, context);
  if (mode == "serve") {
    bellows::acceptor acceptor(p.io.get_executor(), uri, p.channel);
    std::cout << "ready" << std::endl;
    asio::co_spawn(p.io, serve(p, acceptor), asio::detached);
    p.io.run();
    return p.status;
  }
  p.channel.connect_timeout = 10s;
  bool finished = false;
  asio::co_spawn(p.io, drive(p, uri, mode == "idle" ? 1 : messages, mode == "idle"), [&](std::exception_ptr) {
    finished = true;
    p.io.stop();
  });
  p.io.run_for(120s);
  if (!finished) {
    std::cout << "net_probe: did not finish within two minutes, after " << p.echoed << " echoes" << std::endl;
    return status_unfinished;
  }
  return p.status;
}
