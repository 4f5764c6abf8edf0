#pragma once
// An echo server for cross-process tests: every message received on an accepted channel is
// sent back; it returns once `channels` channels have ended with end_of_stream.

#include "support/processes.hpp"

#include <bellows/bellows.hpp>

#include <asio/co_spawn.hpp>
#include <asio/detached.hpp>
#include <asio/experimental/as_tuple.hpp>
#include <asio/io_context.hpp>
#include <asio/use_awaitable.hpp>

#include <chrono>
#include <string>
#include <vector>

namespace bellows::test {

struct echo_result {
  int channels_done = 0;
  int failures = 0;
};

inline asio::awaitable<void> echo_channel(channel ch, echo_result& result, int expected, asio::io_context& io) {
  using asio::experimental::as_tuple;
  for (;;) {
    auto [ec, view] = co_await ch.async_receive_view(as_tuple(asio::use_awaitable));
    if (ec == error::end_of_stream) break;
    if (ec) {
      ++result.failures;
      break;
    }
    auto [send_ec, n] = co_await ch.async_send(view.buffer(), as_tuple(asio::use_awaitable));
    if (send_ec) {
      ++result.failures;
      break;
    }
  }
  co_await ch.async_close(as_tuple(asio::use_awaitable));
  if (++result.channels_done == expected) io.stop();
}

/// Opens `count` channels to shm://name one after another, running `io` until done or `limit`.
inline std::vector<channel> connect_many(asio::io_context& io, const std::string& name, int count,
                                         std::chrono::seconds limit = std::chrono::seconds(60)) {
  std::vector<channel> open;
  asio::co_spawn(
      io,
      [&]() -> asio::awaitable<void> {
        for (int c = 0; c < count; ++c)
          open.push_back(co_await async_connect(io.get_executor(), "shm://" + name, asio::use_awaitable));
      },
      asio::detached);
  io.run_for(limit);
  return open;
}

/// Runs in the child: listens on shm://name, signals ready, echoes on `channels` channels.
inline int run_echo_server(const std::string& name, int channels, context_options options = {},
                           std::chrono::seconds limit = std::chrono::seconds(60)) {
  asio::io_context io;
  configure(io, options);
  acceptor acc(io.get_executor(), "shm://" + name);
  child_process::signal_ready();
  echo_result result;
  asio::co_spawn(
      io,
      [&]() -> asio::awaitable<void> {
        for (int i = 0; i < channels; ++i) {
          channel ch = co_await acc.async_accept(asio::use_awaitable);
          asio::co_spawn(io, echo_channel(std::move(ch), result, channels, io), asio::detached);
        }
      },
      asio::detached);
  io.run_for(limit);
  if (std::getenv("BELLOWS_TEST_DEBUG"))
    fprintf(stderr, "echo server: %d of %d channels done, %d failures\n", result.channels_done, channels,
            result.failures);
  if (result.channels_done != channels) return 10;
  return result.failures == 0 ? 0 : 11;
}

}  // namespace bellows::test
