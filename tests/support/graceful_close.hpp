#pragma once
// The whole of a graceful close, for tests that drive an io_context by hand: this end closes,
// then reads until the peer's close. A peer's own close completes only once this side has
// consumed it, so a test that stopped running its io_context after its own close would leave
// the peer waiting (and a child process past its deadline).

#include "support/run_until.hpp"

#include <bellows/bellows.hpp>

#include <asio/buffer.hpp>
#include <asio/io_context.hpp>

#include <array>
#include <chrono>
#include <optional>
#include <system_error>

namespace bellows::test {

struct close_outcome {
  std::optional<std::error_code> closed;  ///< this end's async_close; empty if it never completed
  std::optional<std::error_code> ended;   ///< the receive after it: end_of_stream once the peer closed
};

inline close_outcome close_and_await_end(asio::io_context& io, bellows::channel& ch,
                                         std::chrono::milliseconds limit = std::chrono::seconds(10)) {
  close_outcome out;
  std::array<std::byte, 64> tail{};
  ch.async_close([&](std::error_code ec) { out.closed = ec; });
  ch.async_receive(asio::buffer(tail), [&](std::error_code ec, std::size_t) { out.ended = ec; });
  run_until(
      io, [&] { return out.closed.has_value() && out.ended.has_value(); }, limit);
  return out;
}

}  // namespace bellows::test
