#pragma once
// Error codes reported by bellows operations, as std::error_code values of their own category.

#include <system_error>

namespace bellows {

enum class error {
  /// The peer wrote a frame, acknowledgement or credit that breaks the protocol; the channel is
  /// closed and nothing out of bounds was read or written.
  protocol_violation = 1,
  /// No acknowledgement of a buffer enlargement (or shrink) arrived within `ack_timeout`. The send
  /// transferred zero bytes and may be retried; a late acknowledgement is still honoured.
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
};

const std::error_category& error_category() noexcept;

inline std::error_code make_error_code(error e) noexcept { return {static_cast<int>(e), error_category()}; }

}  // namespace bellows

template <>
struct std::is_error_code_enum<bellows::error> : std::true_type {};
