#pragma once
// Error codes reported by bellows operations, as std::error_code values of their own category.

#include <bellows/detail/export.hpp>

#include <system_error>

namespace bellows {

enum class error {
  /// The peer wrote a frame, acknowledgement or credit that breaks the protocol; the channel is
  /// closed and nothing out of bounds was read or written.
  protocol_violation = 1,
  /// No longer a send result: a send whose enlargement is not acknowledged within `ack_timeout`
  /// goes on in fragments through the current ring (see tier_event::what::timed_out and
  /// channel_stats::ack_timeouts). Kept so that code naming it still compiles.
  enlarge_timeout,
  /// The receive buffer is smaller than the message (the message was discarded), or a send is
  /// larger than the channel's max_message_size (nothing was sent).
  message_size,
  /// The peer died or disconnected; pending operations are abandoned.
  connection_reset,
  /// The peer closed its side gracefully and every message before its close was delivered.
  end_of_stream,
  /// The operation was started on, or was pending on, a channel closed locally.
  channel_closed,
  /// Registering memory would exceed the configured budget.
  budget_exhausted,
  /// An argument or option is out of range (for example a malformed tier table).
  invalid_argument,
  /// The file of a send_file ended before the range the send named: it shrank during the send.
  /// The frames already placed cannot be taken back, so the channel is closed.
  file_truncated,
  /// The peer did not prove that it holds the channel's pre_shared_key, or this side has none
  /// and the peer demanded one; the connection was closed before any channel was set up on it.
  authentication_failed,
};

BELLOWS_EXPORT const std::error_category& error_category() noexcept;

inline std::error_code make_error_code(error e) noexcept { return {static_cast<int>(e), error_category()}; }

}  // namespace bellows

/// @cond
template <>
struct std::is_error_code_enum<bellows::error> : std::true_type {};
/// @endcond
