#include "peer.hpp"

#include "process.hpp"
#include "turns.hpp"

#include <bellows/bellows.hpp>

#include <asio/co_spawn.hpp>
#include <asio/detached.hpp>
#include <asio/experimental/as_tuple.hpp>
#include <asio/io_context.hpp>
#include <asio/steady_timer.hpp>
#include <asio/use_awaitable.hpp>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <memory>
#include <sstream>
#include <system_error>
#include <vector>

using asio::use_awaitable;
using asio::experimental::as_tuple;

namespace perf {

namespace {

struct peer_state {
  asio::io_context& io;
  std::size_t max_message;
  std::size_t idle_channels = 0;
  /// The provisioning time of the last ring this process registered for a peer's request.
  std::chrono::nanoseconds last_provisioning{0};
};

/// A channel's operation failed: the end of a measurement (the client closed or went away) is
/// expected, anything else is said, since the client only sees its channel reset.
void say_if_unexpected(const char* role, std::error_code ec) {
  if (!ec || ec == bellows::error::end_of_stream || ec == bellows::error::connection_reset ||
      ec == bellows::error::channel_closed)
    return;
  std::fprintf(stderr, "bellows-perf peer: %s channel: %s\n", role, ec.message().c_str());
}

/// Holds a receive pending until the client closes or drops the channel: the only cost of an
/// idle channel on this side is this coroutine frame.
asio::awaitable<void> until_closed(bellows::channel& ch) {
  std::byte none[1];
  for (int i = 0; i < 1'000'000; ++i) {
    auto [ec, n] = co_await ch.async_receive(asio::buffer(none), as_tuple(use_awaitable));
    if (ec && ec != bellows::error::message_size) co_return;
  }
}

/// A buffer for the largest message, left unwritten: zeroing 4 MiB (a thousand page faults here)
/// would fall inside the sender's timed run.
std::unique_ptr<std::byte[]> sink_buffer(std::size_t size) { return std::make_unique_for_overwrite<std::byte[]>(size); }

/// At most this many receives posted by a sink: each holds a buffer for the largest message.
constexpr std::uint64_t max_sink_depth = 256;

asio::awaitable<void> serve(bellows::channel ch, std::shared_ptr<peer_state> state) {
  char text[128];
  auto [ec, n] = co_await ch.async_receive(asio::buffer(text, sizeof text - 1), as_tuple(use_awaitable));
  if (!ec) {
    text[n] = '\0';
    std::istringstream command(text);
    std::string role;
    command >> role;
    if (role == "pong") {
      std::vector<std::byte> buffer(state->max_message), answer(state->max_message, std::byte{2});
      for (;;) {
        auto [receive_ec, size] = co_await ch.async_receive(asio::buffer(buffer), as_tuple(use_awaitable));
        say_if_unexpected("pong", receive_ec);
        if (receive_ec) break;
        auto [send_ec, sent] = co_await ch.async_send(asio::buffer(answer.data(), size), as_tuple(use_awaitable));
        say_if_unexpected("pong", send_ec);
        if (send_ec) break;
      }
    } else if (role == "sink") {
      std::uint64_t count = 0, depth = 1, buffer_count = 1;
      command >> count >> depth >> buffer_count;
      // `depth` receives posted at once, into one buffer (as ucx_perftest's receiver) or each
      // into its own.
      depth = std::clamp<std::uint64_t>(depth, 1, max_sink_depth);
      buffer_count = std::clamp<std::uint64_t>(buffer_count, 1, depth);
      std::vector<std::unique_ptr<std::byte[]>> buffers;
      for (std::uint64_t i = 0; i < buffer_count; ++i) buffers.push_back(sink_buffer(state->max_message));
      bool intact = true;
      try {
        co_await in_turns(count, depth, [&](std::uint64_t lane) -> asio::awaitable<void> {
          co_await ch.async_receive(asio::buffer(buffers[lane % buffer_count].get(), state->max_message),
                                    use_awaitable);
        });
      } catch (const std::system_error& e) {
        say_if_unexpected("sink", e.code());
        intact = false;
      }
      const char done = 1;
      if (intact) co_await ch.async_send(asio::buffer(&done, 1), as_tuple(use_awaitable));
      co_await until_closed(ch);
    } else if (role == "view-sink") {
      std::uint64_t count = 0;
      command >> count;
      bool intact = true;
      for (std::uint64_t i = 0; i < count && intact; ++i) {
        auto [receive_ec, view] = co_await ch.async_receive_view(as_tuple(use_awaitable));
        intact = !receive_ec;
      }
      const char done = 1;
      if (intact) co_await ch.async_send(asio::buffer(&done, 1), as_tuple(use_awaitable));
      co_await until_closed(ch);
    } else if (role == "enlarge") {
      // Every message is answered with the time this side last spent provisioning a ring. The
      // buffer is left uninitialised: zeroing 4 MiB per channel would be timed as the message.
      const std::unique_ptr<std::byte[]> buffer(new std::byte[state->max_message]);
      for (int i = 0; i < 1'000'000; ++i) {
        auto [receive_ec, size] =
            co_await ch.async_receive(asio::buffer(buffer.get(), state->max_message), as_tuple(use_awaitable));
        say_if_unexpected("enlarge", receive_ec);
        if (receive_ec) break;
        const std::int64_t provisioning_ns = state->last_provisioning.count();
        auto [send_ec, sent] =
            co_await ch.async_send(asio::buffer(&provisioning_ns, sizeof provisioning_ns), as_tuple(use_awaitable));
        say_if_unexpected("enlarge", send_ec);
      }
    } else if (role == "herd") {
      // One message of the announced size into a buffer of that size, answered with 8 bytes.
      std::uint64_t size = 0;
      command >> size;
      std::vector<std::byte> buffer(std::min<std::uint64_t>(size, state->max_message));
      auto [receive_ec, got] = co_await ch.async_receive(asio::buffer(buffer), as_tuple(use_awaitable));
      const std::uint64_t answer = receive_ec ? 0 : got;
      co_await ch.async_send(asio::buffer(&answer, sizeof answer), as_tuple(use_awaitable));
      co_await until_closed(ch);
    } else if (role == "idle") {
      ++state->idle_channels;
      co_await until_closed(ch);
      --state->idle_channels;
    } else if (role == "report") {
      const auto stats = bellows::stats(state->io);
      std::ostringstream answer;
      answer << "idle=" << state->idle_channels << " registered=" << stats.registered_bytes
             << " rss=" << resident_bytes() << " peak_rss=" << peak_resident_bytes();
      const std::string reply = answer.str();
      co_await ch.async_send(asio::buffer(reply), as_tuple(use_awaitable));
      co_await until_closed(ch);
    } else {
      std::fprintf(stderr, "bellows-perf peer: unknown role '%s'\n", text);
    }
  }
}

}  // namespace

int run_peer(const std::string& uri, std::size_t max_message, std::size_t budget,
             std::optional<std::uint64_t> one_copy_above, int ready_fd) {
  asio::io_context io;
  bellows::context_options context;
  context.registered_memory_budget = budget;
  bellows::configure(io, context);
  auto state = std::make_shared<peer_state>(peer_state{io, max_message});
  bellows::channel_options options;
  options.one_copy_above = one_copy_above;
  options.on_tier_event = [state](const bellows::tier_event& e) {
    if (e.kind == bellows::tier_event::what::provisioned && !e.shrink) state->last_provisioning = e.elapsed;
  };
  std::error_code ec;
  bellows::acceptor acceptor(io.get_executor(), uri, options, ec);
  if (ec) {
    std::fprintf(stderr, "bellows-perf: cannot listen on %s: %s\n", uri.c_str(), ec.message().c_str());
    return 2;
  }
  if (ready_fd >= 0) {
    const char one = 1;
    if (::write(ready_fd, &one, 1) != 1) return 2;
    ::close(ready_fd);
  }
  asio::co_spawn(
      io,
      [&]() -> asio::awaitable<void> {
        for (;;) {
          auto [accept_ec, ch] = co_await acceptor.async_accept(as_tuple(use_awaitable));
          if (accept_ec == asio::error::operation_aborted) co_return;
          if (accept_ec) {  // one refused channel (a short budget, say) does not end the service
            std::fprintf(stderr, "bellows-perf peer: accept: %s\n", accept_ec.message().c_str());
            continue;
          }
          asio::co_spawn(io, serve(std::move(ch), state), asio::detached);
        }
      },
      asio::detached);
  io.run();
  return 0;
}

}  // namespace perf
