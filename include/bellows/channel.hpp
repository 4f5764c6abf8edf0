#pragma once
// A bidirectional message channel between two endpoints. One async_send is one message and is
// received by exactly one async_receive, whole, in order. Like an Asio socket, a channel is
// used from one thread (the one running its io_context) and is movable, not copyable.
//
// Every asynchronous operation takes an Asio completion token (a callback, use_awaitable,
// use_future, experimental::as_tuple, experimental::deferred, ...) and completes with an
// std::error_code first. Handlers never run inside the initiating function (there they are
// posted to their associated executor). An operation completed by the reactor is dispatched
// to that executor once the reactor's poll is over, as Asio's own sockets do: on the thread
// running the io_context it runs at once, outside any bellows code. Buffers passed to an
// operation must stay valid until it completes. Per-operation cancellation (a cancellation slot bound to the token, as
// the `||` operator of awaitable operators does) completes a pending receive or close wait with
// asio::error::operation_aborted, and a send only if it has not written anything yet.

#include <bellows/detail/channel_access.hpp>
#include <bellows/error.hpp>
#include <bellows/message_view.hpp>
#include <bellows/stats.hpp>

#include <asio/any_io_executor.hpp>
#include <asio/async_result.hpp>

#include <cstddef>
#include <memory>
#include <system_error>
#include <utility>

namespace bellows {

/// What try_send did.
enum class send_status {
  sent,        ///< the whole message was written; the buffers may be reused
  enlarging,   ///< the message needs a larger ring, which has been asked for; nothing was written
  no_credits,  ///< the peer's ring has no room right now (or earlier sends are queued); nothing was written
};

class channel {
 public:
  using executor_type = asio::any_io_executor;

  channel() noexcept = default;
  explicit channel(std::shared_ptr<detail::channel_state> state) noexcept : state_(std::move(state)) {}
  channel(channel&&) noexcept = default;
  channel& operator=(channel&& other) noexcept {
    if (this != &other) {
      abort();
      state_ = std::move(other.state_);
    }
    return *this;
  }
  /// Destroying an open channel aborts it (see abort()).
  ~channel() { abort(); }

  executor_type get_executor() const noexcept { return detail::executor_of(*state_); }
  bool is_open() const noexcept { return state_ && detail::is_open(*state_); }

  /// Sends the bytes of `buffers` as one message. Completes with the message's size once it
  /// has been copied into the peer's ring (or error::enlarge_timeout with 0 bytes when a ring
  /// enlargement was not acknowledged in time; the send may be repeated). Messages larger
  /// than the largest tier, or whose enlargement the peer denied, are sent in fragments. A
  /// message larger than the channel's max_message_size (the smaller of both sides' options)
  /// completes with error::message_size and 0 bytes, and the channel stays open.
  /// Signature: void(std::error_code, std::size_t bytes).
  template <class ConstBufferSequence, class CompletionToken = asio::default_completion_token_t<executor_type>>
  auto async_send(const ConstBufferSequence& buffers, CompletionToken&& token = {}) {
    return asio::async_initiate<CompletionToken, void(std::error_code, std::size_t)>(
        [](auto handler, std::shared_ptr<detail::channel_state> s, detail::gather message) {
          const auto id = detail::next_operation_id(*s);
          detail::on_cancellation(handler, s, id);
          auto ex = detail::executor_of(*s);
          detail::start_send(*s, id, std::move(message), detail::size_completion(std::move(handler), ex));
        },
        token, checked_state(), detail::gather_of(buffers));
  }

  /// Receives the next message into `buffers`. Completes with its size; a message larger than
  /// the buffers completes with error::message_size and is discarded, and the next receive
  /// gets the next message. After the peer's graceful close and its last message:
  /// error::end_of_stream. Signature: void(std::error_code, std::size_t bytes).
  template <class MutableBufferSequence, class CompletionToken = asio::default_completion_token_t<executor_type>>
  auto async_receive(const MutableBufferSequence& buffers, CompletionToken&& token = {}) {
    return asio::async_initiate<CompletionToken, void(std::error_code, std::size_t)>(
        [](auto handler, std::shared_ptr<detail::channel_state> s, detail::scatter into) {
          const auto id = detail::next_operation_id(*s);
          detail::on_cancellation(handler, s, id);
          auto ex = detail::executor_of(*s);
          detail::start_receive(*s, id, std::move(into), detail::size_completion(std::move(handler), ex));
        },
        token, checked_state(), detail::scatter_of(buffers));
  }

  /// Receives the next message without copying it (see message_view). The view may outlive
  /// the channel. Signature: void(std::error_code, message_view).
  template <class CompletionToken = asio::default_completion_token_t<executor_type>>
  auto async_receive_view(CompletionToken&& token = {}) {
    return asio::async_initiate<CompletionToken, void(std::error_code, message_view)>(
        [](auto handler, std::shared_ptr<detail::channel_state> s) {
          const auto id = detail::next_operation_id(*s);
          detail::on_cancellation(handler, s, id);
          auto ex = detail::executor_of(*s);
          detail::start_receive_view(*s, id, detail::view_completion(std::move(handler), ex));
        },
        token, checked_state());
  }

  /// Graceful close of the sending direction: every message sent before is delivered, then
  /// the peer's receives end with error::end_of_stream. Completes once the peer has consumed
  /// everything. Receiving continues until the peer closes too. Cancelling stops the wait,
  /// not the close. Signature: void(std::error_code).
  template <class CompletionToken = asio::default_completion_token_t<executor_type>>
  auto async_close(CompletionToken&& token = {}) {
    return asio::async_initiate<CompletionToken, void(std::error_code)>(
        [](auto handler, std::shared_ptr<detail::channel_state> s) {
          const auto id = detail::next_operation_id(*s);
          detail::on_cancellation(handler, s, id);
          auto ex = detail::executor_of(*s);
          detail::start_close(*s, id, detail::close_completion(std::move(handler), ex));
        },
        token, checked_state());
  }

  /// Writes the message now if it can, for progress-engine loops that never suspend. A
  /// message that does not fit the current ring asks for a larger one and reports
  /// `enlarging`; call again later. Errors: a failed or closed channel; error::message_size
  /// for a message that needs fragments larger than the ring can ever offer at once (use
  /// async_send for those).
  template <class ConstBufferSequence>
  send_status try_send(const ConstBufferSequence& buffers, std::error_code& ec) {
    if (!state_) {
      ec = make_error_code(error::channel_closed);
      return send_status::no_credits;
    }
    return detail::try_send(*state_, detail::gather_of(buffers), ec);
  }
  template <class ConstBufferSequence>
  send_status try_send(const ConstBufferSequence& buffers) {
    std::error_code ec;
    const auto status = try_send(buffers, ec);
    if (ec) throw std::system_error(ec, "bellows::channel::try_send");
    return status;
  }

  /// Completes every pending operation that can be cancelled with operation_aborted.
  void cancel() noexcept {
    if (state_) detail::cancel_all(*state_);
  }

  /// Tears the channel down at once: pending operations complete with error::channel_closed
  /// and the peer's with error::connection_reset. Memory is returned once the peer has let go.
  void abort() noexcept {
    if (state_) detail::abort(*state_);
    state_.reset();
  }

  channel_stats stats() const { return state_ ? detail::stats_of(*state_) : channel_stats{}; }

 private:
  const std::shared_ptr<detail::channel_state>& checked_state() const {
    if (!state_) throw std::system_error(make_error_code(error::channel_closed), "bellows::channel");
    return state_;
  }

  std::shared_ptr<detail::channel_state> state_;
};

}  // namespace bellows
