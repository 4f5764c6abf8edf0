#pragma once
// Peers for cross-process tests, run in a child: an echo server (every message received on an
// accepted channel is sent back, until `channels` channels ended with end_of_stream) and a
// passive server (accepts and never receives). They listen on any provider's URI.

#include "support/echo.hpp"
#include "support/processes.hpp"
#include "support/run_until.hpp"

#include <bellows/bellows.hpp>

#include <asio/co_spawn.hpp>
#include <asio/detached.hpp>
#include <asio/experimental/as_tuple.hpp>
#include <asio/io_context.hpp>
#include <asio/steady_timer.hpp>
#include <asio/use_awaitable.hpp>

#include <chrono>
#include <map>
#include <optional>
#include <string>
#include <vector>

namespace bellows::test {

/// Channel options for a test over `uri`. These tests judge delivery, not speed, and run where
/// dozens of channels enlarging at once outlast the default one-second ack timeout: Soft-RoCE
/// on the guest's emulated CPU (registering a 1 MiB ring takes tens of milliseconds) and
/// ThreadSanitizer, which slows both processes several times. The timeout is 30 s; the tests of
/// the timeout itself set their own. Every message above the largest tier's frames goes in one
/// copy on every provider (shm does so only when asked), so the suite covers that path
/// everywhere; the tests of shm's default set their own.
inline channel_options options_for(const std::string&) {
  channel_options o;
  o.ack_timeout = std::chrono::seconds(30);
  o.one_copy_above = 0;
  return o;
}

/// Connects to `uri` and accepts on `acc` at the same time, in this process; false unless both
/// ends opened within ten seconds.
inline bool connect_and_accept(asio::io_context& io, acceptor& acc, const std::string& uri,
                               std::optional<channel>& near, std::optional<channel>& far) {
  std::error_code connected, accepted;
  async_connect(io.get_executor(), uri, options_for(uri), [&](std::error_code ec, channel c) {
    connected = ec;
    near = std::move(c);
  });
  acc.async_accept([&](std::error_code ec, channel c) {
    accepted = ec;
    far = std::move(c);
  });
  return run_until(
             io, [&] { return near && far; }, std::chrono::seconds(10)) &&
         !connected && !accepted;
}

struct echo_result {
  int channels_done = 0;
  int failures = 0;
};

inline asio::awaitable<void> echo_channel(channel ch, echo_result& result, int expected, asio::io_context& io) {
  const echo_end end = co_await echo_until_end(ch);
  if (end.failed != nullptr) ++result.failures;
  co_await ch.async_close(asio::experimental::as_tuple(asio::use_awaitable));
  if (++result.channels_done == expected) io.stop();
}

/// Opens `count` channels to `uri` one after another, running `io` until done or `limit`.
inline std::vector<channel> connect_many(asio::io_context& io, const std::string& uri, int count,
                                         std::chrono::seconds limit = std::chrono::seconds(60)) {
  std::vector<channel> open;
  asio::co_spawn(
      io,
      [&]() -> asio::awaitable<void> {
        for (int c = 0; c < count; ++c)
          open.push_back(co_await async_connect(io.get_executor(), uri, options_for(uri), asio::use_awaitable));
      },
      asio::detached);
  io.run_for(limit);
  return open;
}

/// Runs in the child: listens on `uri`, signals ready, echoes on `channels` channels.
inline int run_echo_server(const std::string& uri, int channels, context_options options = {},
                           std::chrono::seconds limit = std::chrono::seconds(60)) {
  asio::io_context io;
  configure(io, options);
  acceptor acc(io.get_executor(), uri, options_for(uri));
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
  // Stopped by its last channel or by one timer: run_for would wake every second to look at
  // its clock, which an idle-CPU measurement of this process would count.
  asio::steady_timer deadline(io, limit);
  deadline.async_wait([&](std::error_code ec) {
    if (!ec) io.stop();
  });
  io.run();
  if (std::getenv("BELLOWS_TEST_DEBUG"))
    fprintf(stderr, "echo server: %d of %d channels done, %d failures\n", result.channels_done, channels,
            result.failures);
  if (result.channels_done != channels) return 10;
  return result.failures == 0 ? 0 : 11;
}

}  // namespace bellows::test

namespace bellows::test {

/// Runs in the child: accepts channels and keeps them without ever receiving; an accept stays
/// pending so the reactor keeps serving the protocol (scan-ahead, provisioning).
inline int run_passive_server(const std::string& uri, context_options options,
                              std::chrono::seconds limit = std::chrono::seconds(60)) {
  asio::io_context io;
  configure(io, options);
  acceptor acc(io.get_executor(), uri, options_for(uri));
  child_process::signal_ready();
  std::vector<channel> held;
  asio::co_spawn(
      io,
      [&]() -> asio::awaitable<void> {
        for (;;) held.push_back(co_await acc.async_accept(asio::use_awaitable));
      },
      asio::detached);
  io.run_for(limit);
  return 0;
}

/// A budget argument of the roles below: 0 means unlimited.
inline context_options options_with_budget(const std::string& budget) {
  context_options options;
  if (const auto bytes = std::stoull(budget); bytes != 0) options.registered_memory_budget = bytes;
  return options;
}

/// ARGS: role URI CHANNELS BUDGET SECONDS.
inline const child_role echo_server_role("echo-server", [](const std::vector<std::string>& args) {
  return run_echo_server(args.at(1), std::stoi(args.at(2)), options_with_budget(args.at(3)),
                         std::chrono::seconds(std::stoi(args.at(4))));
});
/// ARGS: role URI BUDGET.
inline const child_role passive_server_role("passive-server", [](const std::vector<std::string>& args) {
  return run_passive_server(args.at(1), options_with_budget(args.at(2)));
});

/// A peer in a fresh process (see child_process::exec_self); `budget` 0 means unlimited.
inline child_process start_echo_server(const std::string& uri, int channels, std::size_t budget = 0,
                                       std::chrono::seconds limit = std::chrono::seconds(60)) {
  return child_process::exec_self(
      echo_server_role, {uri, std::to_string(channels), std::to_string(budget), std::to_string(limit.count())});
}

inline child_process start_passive_server(const std::string& uri, std::size_t budget = 0) {
  return child_process::exec_self(passive_server_role, {uri, std::to_string(budget)});
}

}  // namespace bellows::test
