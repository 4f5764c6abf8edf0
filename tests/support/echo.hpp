#pragma once
// The echo loop every test peer runs: each message back as it came, until the channel ends.

#include <bellows/bellows.hpp>

#include <asio/experimental/as_tuple.hpp>
#include <asio/use_awaitable.hpp>

#include <system_error>

namespace bellows::test {

/// How an echo loop ended: at the peer's graceful end (`failed` null), or with the receive's or
/// the send's error.
struct echo_end {
  std::error_code ec;
  const char* failed = nullptr;  ///< "receive" or "send"
};

/// Sends every message back until a receive or a send fails; the channel stays open. Take the
/// result into a variable before testing it: g++ 12 miscompiled `if ((co_await
/// echo_until_end(ch)).failed)` here, and the echo peer crashed on its first message.
inline asio::awaitable<echo_end> echo_until_end(channel& ch) {
  using asio::experimental::as_tuple;
  for (;;) {
    auto [ec, view] = co_await ch.async_receive_view(as_tuple(asio::use_awaitable));
    if (ec) co_return echo_end{ec, ec == error::end_of_stream ? nullptr : "receive"};
    auto [send_ec, n] = co_await ch.async_send(view.buffer(), as_tuple(asio::use_awaitable));
    if (send_ec) co_return echo_end{send_ec, "send"};
  }
}

}  // namespace bellows::test
