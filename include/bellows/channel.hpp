#pragma once
// A bidirectional message channel between two endpoints. One async_send is one message and is
// received by exactly one async_receive, whole, in order.
//
// Thread safety, as for an Asio socket: distinct objects are safe; a shared object is unsafe,
// so one channel's operations are started from one thread at a time (its strand, when the
// io_context runs on a pool of threads). Any thread may start them, not only one running the
// io_context: the initiating function takes the reactor's lock and registers the operation at
// once, as Asio's reactive sockets do with theirs. Exception: cancel() may come from any thread
// at any time, since it only reads the object. The reactor polls every channel of an
// io_context on a strand of its own, so any number of threads may run the io_context; each
// handler runs on its associated executor, by default the channel's (the executor it was
// connected or accepted with, e.g. asio::make_strand(io)). It is movable, not copyable.
//
// Every asynchronous operation takes an Asio completion token (a callback, use_awaitable,
// use_future, experimental::as_tuple, experimental::deferred, ...) whose signature begins with
// std::error_code. A handler never runs inside the initiating function: an operation that
// completes at once has its handler posted; one that the reactor completes is dispatched to
// the handler's associated executor once the reactor's poll is over, outside any bellows code.
// Buffers passed to an operation must stay valid until it completes. A token that defers the
// start (experimental::deferred) reads the channel when the operation starts: the channel may
// be moved meanwhile, not destroyed, as an Asio socket must outlive such an operation. The
// channel may be destroyed while operations are pending: they complete with
// error::channel_closed. An operation started on a closed (aborted) or moved-from channel
// completes with error::channel_closed as well, its handler posted, never thrown from the
// initiating call.

#include <bellows/detail/channel_access.hpp>
#include <bellows/endpoint.hpp>
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

/// A message channel to one peer: whole messages both ways, in order, each direction with its
/// own rings that grow on demand. Made by async_connect or acceptor::async_accept. Used from one
/// thread at a time, as an Asio socket is; different channels may be used from different
/// threads at once.
class channel {
 public:
  /// The executor handlers run on unless they name their own.
  using executor_type = asio::any_io_executor;
  /// Completion signature of async_send, async_send_file and async_receive: the error, then
  /// the message's length (0 on error).
  using size_signature = void(std::error_code, std::size_t);
  /// Completion signature of async_receive_view.
  using view_signature = void(std::error_code, message_view);
  /// Completion signature of async_close.
  using close_signature = void(std::error_code);

  /// A channel that is not open; async_connect and acceptor::async_accept make open ones.
  channel() noexcept = default;
  /// The moved-from channel is closed and keeps its executor, as a moved-from Asio socket does.
  channel(channel&& other) noexcept : executor_(other.executor_), state_(std::move(other.state_)) {}
  /// Aborts this channel (see abort()), then takes over `other`'s, which is left closed with
  /// its executor.
  channel& operator=(channel&& other) noexcept {
    if (this != &other) {
      abort();
      executor_ = other.executor_;
      state_ = std::move(other.state_);
    }
    return *this;
  }
  /// Destroying an open channel aborts it (see abort()).
  ~channel() { abort(); }

  /// The executor of the io_context the channel was opened on; kept after close, abort and
  /// move. A default-constructed channel has none (an empty executor).
  executor_type get_executor() const noexcept { return executor_; }
  /// False for a default-constructed, moved-from or aborted channel, and once the channel failed
  /// (the peer vanished, a protocol violation); a gracefully closed direction leaves it open.
  bool is_open() const noexcept { return state_ && detail::is_open(*state_); }

  /// Sends the bytes of `buffers` as one message.
  ///
  /// @param buffers One or more buffers, sent back to back as one message (a gather send).
  ///   They must stay valid until the operation completes.
  /// @param token The completion token; signature `void(std::error_code ec, std::size_t bytes)`.
  ///
  /// Completes with the message's size once it is in the peer's ring (not yet received).
  /// A message larger than the current ring's frames makes the sender ask the peer for a
  /// larger ring. If its fragments fit the current ring's free room it goes at once, in
  /// fragments right behind the request, and the next large message finds the larger ring;
  /// otherwise it waits for the answer. Larger than the largest tier, or after a denial, it
  /// goes in fragments.
  /// A slow peer never fails a send: without an answer within ack_timeout the send goes on in
  /// fragments through the current ring, like a TCP sender on a full window, and the channel
  /// moves to the larger ring whenever the answer comes.
  /// Over tcp, a message larger than the largest tier's frames is first offered to the peer:
  /// if the receive that takes it has one buffer large enough, the message is written straight
  /// into that buffer, and the send completes once the kernel has taken every byte of it (as an
  /// Asio socket's write does), or else when the peer has it: what the socket cannot take at
  /// once leaves from `buffers` as it makes room, which is why they must outlive the send.
  /// Otherwise it is fragmented as above. Such a send waits for the peer's receive, as a rendezvous does.
  ///
  /// Errors: error::message_size (0 bytes; larger than the channel's max_message_size, the
  /// smaller of both sides'; the channel stays open), error::connection_reset (the peer died or went away),
  /// error::protocol_violation, error::channel_closed (closed or aborted here, or after async_close).
  ///
  /// Cancellation: any type (terminal, partial, total) completes a send that has written
  /// nothing yet with asio::error::operation_aborted and 0 bytes; a send that began writing
  /// (or, over tcp, offered its message) completes normally.
  template <class ConstBufferSequence,
            ASIO_COMPLETION_TOKEN_FOR(size_signature) CompletionToken = asio::default_completion_token_t<executor_type>>
  auto async_send(const ConstBufferSequence& buffers, CompletionToken&& token = {}) {
    return detail::initiate<size_signature>(std::forward<CompletionToken>(token), state_.get(), executor_,
                                            &detail::start_send, detail::gather_of(buffers));
  }

  /// Sends `length` bytes of an open file, from byte `offset` on, as one message. The bytes
  /// are read with pread as each frame is placed: over shm straight into the peer's ring, over
  /// other providers into the provider's own buffer, never into one of the application's.
  /// Messages, order, tiers, cancellation and errors are those of async_send; the receiver
  /// cannot tell the two apart.
  ///
  /// @param file_descriptor A regular file or block device opened for reading; it must stay
  ///   open, and the range must not shrink, until the operation completes.
  /// @param offset The first byte of the file to send.
  /// @param length How many bytes: the message's length.
  /// @param token The completion token; signature `void(std::error_code ec, std::size_t bytes)`.
  ///
  /// The reads run on the thread that places the frames, the io_context's: a file in the page
  /// cache costs one copy, one on disk stalls the io_context for its reads. The call asks the
  /// kernel to read the range ahead (POSIX_FADV_WILLNEED) as it starts.
  ///
  /// Errors, besides async_send's: the descriptor's errno from fstat (for example
  /// std::errc::bad_file_descriptor) and error::invalid_argument (not a regular file or block
  /// device, or the range ends past the file's end), both before anything is sent, the channel
  /// staying open; error::file_truncated or a read's errno when the file shrank or failed
  /// during the send: the frames already placed cannot be taken back, so the channel is closed
  /// with that error, which every pending operation then reports.
  template <ASIO_COMPLETION_TOKEN_FOR(size_signature) CompletionToken = asio::default_completion_token_t<executor_type>>
  auto async_send_file(int file_descriptor, std::uint64_t offset, std::uint64_t length, CompletionToken&& token = {}) {
    return detail::initiate<size_signature>(std::forward<CompletionToken>(token), state_.get(), executor_,
                                            &detail::start_send,
                                            detail::gather_of_file(file_descriptor, offset, length));
  }

  /// Receives the next message into `buffers`.
  ///
  /// @param buffers Where the message goes (a scatter receive); valid until completion.
  /// @param token The completion token; signature `void(std::error_code ec, std::size_t bytes)`.
  ///
  /// Completes with the message's size. Errors: error::message_size (the message was larger
  /// than the buffers and is discarded; `bytes` is its size, so the caller knows the buffer it
  /// needed; the next receive gets the next message),
  /// error::end_of_stream (the peer closed gracefully and every earlier message was
  /// received), error::connection_reset, error::protocol_violation, error::channel_closed.
  /// Messages the peer wrote before it failed are still delivered first.
  ///
  /// Cancellation: any type completes the receive with asio::error::operation_aborted, and
  /// loses no message: where it had already taken the first fragments of a fragmented message
  /// (any message larger than the frames of the ring it came through), those wait for the
  /// next receive, which gets the whole message (or message_size, its buffers too small).
  /// Over tcp, a receive whose buffer is lent to the peer for a large message (see async_send)
  /// is not cancelled: it completes with that message once it is in; abort() still ends it at
  /// once (channel_closed), and the rest of the peer's write is dropped.
  template <class MutableBufferSequence,
            ASIO_COMPLETION_TOKEN_FOR(size_signature) CompletionToken = asio::default_completion_token_t<executor_type>>
  auto async_receive(const MutableBufferSequence& buffers, CompletionToken&& token = {}) {
    return detail::initiate<size_signature>(std::forward<CompletionToken>(token), state_.get(), executor_,
                                            &detail::start_receive, detail::scatter_of(buffers));
  }

  /// Receives the next message without copying it (see message_view), which may outlive the
  /// channel. Signature `void(std::error_code ec, message_view message)`. Errors and
  /// cancellation as for async_receive, without message_size: a view takes any size.
  template <ASIO_COMPLETION_TOKEN_FOR(view_signature) CompletionToken = asio::default_completion_token_t<executor_type>>
  auto async_receive_view(CompletionToken&& token = {}) {
    return detail::initiate<view_signature>(std::forward<CompletionToken>(token), state_.get(), executor_,
                                            &detail::start_receive_view);
  }

  /// Graceful close of the sending direction: every message sent before is delivered, then
  /// the peer's receives end with error::end_of_stream. Receiving continues until the peer
  /// closes too. Signature `void(std::error_code ec)`; completes once the peer consumed
  /// everything. Errors: error::connection_reset, error::channel_closed, the earlier result
  /// for a second close, error::invalid_argument while one is pending.
  ///
  /// Cancellation: any type stops the wait (asio::error::operation_aborted), not the close.
  template <ASIO_COMPLETION_TOKEN_FOR(close_signature)
                CompletionToken = asio::default_completion_token_t<executor_type>>
  auto async_close(CompletionToken&& token = {}) {
    return detail::initiate<close_signature>(std::forward<CompletionToken>(token), state_.get(), executor_,
                                             &detail::start_close);
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
  /// As above, but throws std::system_error where that one sets `ec`.
  template <class ConstBufferSequence>
  send_status try_send(const ConstBufferSequence& buffers) {
    std::error_code ec;
    const auto status = try_send(buffers, ec);
    if (ec) throw std::system_error(ec, "bellows::channel::try_send");
    return status;
  }

  /// Cancels every pending operation that can still be undone (see each operation).
  void cancel() noexcept {
    if (state_) detail::cancel_all(*state_);
  }

  /// Tears the channel down at once: pending operations complete with error::channel_closed
  /// and the peer's with error::connection_reset. Memory is returned once the peer has let go.
  void abort() noexcept {
    if (state_) detail::abort(*state_);
    state_.reset();
  }

  /// This side's counters and tiers (see channel_stats); all zero for a channel never opened.
  channel_stats stats() const { return state_ ? detail::stats_of(*state_) : channel_stats{}; }

  /// Who the peer is: process and user id over shm (from the kernel, SO_PEERCRED), address and
  /// port over rdma. Still known after the peer failed or closed. Throws system_error with
  /// error::channel_closed on a closed (aborted) or moved-from channel; the overload taking
  /// `ec` sets it instead and returns an empty endpoint.
  endpoint remote_endpoint() const {
    std::error_code ec;
    auto who = remote_endpoint(ec);
    if (ec) throw std::system_error(ec, "bellows::channel::remote_endpoint");
    return who;
  }
  /// As above, but sets `ec` and returns an empty endpoint where that one throws.
  endpoint remote_endpoint(std::error_code& ec) const {
    ec = state_ ? std::error_code{} : make_error_code(error::channel_closed);
    return state_ ? detail::remote_endpoint_of(*state_) : endpoint{};
  }

 private:
  friend struct detail::access;
  explicit channel(std::shared_ptr<detail::channel_state> state) noexcept
      : executor_(detail::executor_of(*state)), state_(std::move(state)) {}

  executor_type executor_;
  std::shared_ptr<detail::channel_state> state_;
};

}  // namespace bellows
