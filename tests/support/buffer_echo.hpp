#pragma once
// A child's body for direct placement tests: one channel, every message sent back from the very
// buffer it was received into, so that both directions carry messages the peer may fetch.

#include "support/peers.hpp"
#include "support/processes.hpp"

#include <bellows/bellows.hpp>

#include <asio/buffer.hpp>
#include <asio/co_spawn.hpp>
#include <asio/detached.hpp>
#include <asio/experimental/as_tuple.hpp>
#include <asio/io_context.hpp>
#include <asio/use_awaitable.hpp>

#include <chrono>
#include <functional>
#include <span>
#include <string>
#include <vector>

namespace bellows::test {

/// Accepts one channel on `uri` and echoes every message until the peer closes; `on_message`
/// sees each one before its echo is sent. Returns 0 after a clean close, 1 if the channel failed
/// or the minute ran out, 2 if the close failed.
inline int serve_buffer_echo(const std::string& uri,
                             const std::function<void(std::span<const std::byte>)>& on_message = {}) {
  using namespace std::chrono_literals;
  using asio::experimental::as_tuple;
  asio::io_context io;
  bellows::acceptor acc(io.get_executor(), uri, options_for(uri));
  child_process::signal_ready();
  int status = 1;
  asio::co_spawn(
      io,
      [&]() -> asio::awaitable<void> {
        auto ch = co_await acc.async_accept(asio::use_awaitable);
        std::vector<std::byte> buffer(std::size_t{4} << 20);
        for (;;) {
          auto [ec, n] = co_await ch.async_receive(asio::buffer(buffer), as_tuple(asio::use_awaitable));
          if (ec == bellows::error::end_of_stream) break;
          if (ec) co_return;
          if (on_message) on_message(std::span<const std::byte>(buffer.data(), n));
          auto [send_ec, sent] = co_await ch.async_send(asio::buffer(buffer.data(), n), as_tuple(asio::use_awaitable));
          if (send_ec) co_return;
        }
        auto [close_ec] = co_await ch.async_close(as_tuple(asio::use_awaitable));
        status = close_ec ? 2 : 0;
      },
      asio::detached);
  io.run_for(60s);
  return status;
}

}  // namespace bellows::test
