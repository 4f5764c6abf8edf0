#pragma once
// Peers for cross-process tests, run in a child: an echo server (every message received on an
// accepted channel is sent back, until `channels` channels ended with end_of_stream) and a
// passive server (accepts and never receives). They listen on any provider's URI.

#include "support/processes.hpp"

#include <bellows/bellows.hpp>

#include <asio/co_spawn.hpp>
#include <asio/detached.hpp>
#include <asio/experimental/as_tuple.hpp>
#include <asio/io_context.hpp>
#include <asio/use_awaitable.hpp>

#include <chrono>
#include <map>
#include <string>
#include <vector>

namespace bellows::test {

/// Channel options for a test over `uri`. These tests judge delivery, not speed, and run where
/// dozens of channels enlarging at once outlast the default one-second ack timeout: Soft-RoCE
/// on the guest's emulated CPU (registering a 1 MiB ring takes tens of milliseconds) and
/// ThreadSanitizer, which slows both processes several times. The timeout is 30 s; the tests of
/// the timeout itself set their own.
inline channel_options options_for(const std::string&) {
  channel_options o;
  o.ack_timeout = std::chrono::seconds(30);
  return o;
}

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
  io.run_for(limit);
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

/// A peer in a fresh process (see child_process::exec_self); `budget` 0 means unlimited.
inline child_process start_echo_server(const std::string& uri, int channels, std::size_t budget = 0,
                                       std::chrono::seconds limit = std::chrono::seconds(60)) {
  return child_process::exec_self(
      {"echo-server", uri, std::to_string(channels), std::to_string(budget), std::to_string(limit.count())});
}

inline child_process start_passive_server(const std::string& uri, std::size_t budget = 0) {
  return child_process::exec_self({"passive-server", uri, std::to_string(budget)});
}

/// Child bodies that a test file defines for itself, by the name it passes to exec_self.
using child_body = int (*)(const std::vector<std::string>& args);
inline std::map<std::string, child_body>& child_bodies() {
  static std::map<std::string, child_body> bodies;
  return bodies;
}
struct register_child {
  register_child(const char* name, child_body body) { child_bodies()[name] = body; }
};

/// The child's side of start_*: ARGS as given there.
inline int run_child(const std::vector<std::string>& args) {
  if (args.empty()) return 96;
  if (auto it = child_bodies().find(args[0]); it != child_bodies().end()) return it->second(args);
  context_options options;
  auto budget_at = [&](std::size_t i) {
    const auto budget = std::stoull(args.at(i));
    if (budget != 0) options.registered_memory_budget = budget;
  };
  if (args[0] == "echo-server" && args.size() == 5) {
    budget_at(3);
    return run_echo_server(args[1], std::stoi(args[2]), options, std::chrono::seconds(std::stoi(args[4])));
  }
  if (args[0] == "passive-server" && args.size() == 3) {
    budget_at(2);
    return run_passive_server(args[1], options);
  }
  return 95;
}

}  // namespace bellows::test
