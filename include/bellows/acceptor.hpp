#pragma once
// Accepts channels that peers open to a URI (shm://NAME, tcp://ADDRESS:PORT, or
// rdma://ADDRESS:PORT, where ADDRESS may be 0.0.0.0 for every interface or RDMA device).
// Thread safety as for channel: distinct objects are safe, a shared object is not (one thread
// or strand at a time, which need not run the io_context).

#include <bellows/channel.hpp>
#include <bellows/describe_problem.hpp>
#include <bellows/detail/channel_access.hpp>
#include <bellows/options.hpp>

#include <asio/any_io_executor.hpp>
#include <asio/async_result.hpp>
#include <asio/execution/executor.hpp>

#include <memory>
#include <string_view>
#include <system_error>
#include <type_traits>

namespace bellows {

namespace detail {
template <class T>
concept executor = asio::execution::is_executor<T>::value;
/// A completion token that is not an executor, so that async_accept(executor) is not taken for one.
template <class T, class Signature>
concept token_not_executor = asio::completion_token_for<T, Signature> && !executor<std::decay_t<T>>;

BELLOWS_EXPORT std::shared_ptr<acceptor_state> listen(const asio::any_io_executor& ex, std::string_view uri,
                                                      const channel_options& options, std::error_code& ec);
}  // namespace detail

/// Listens on a URI and hands out the channels peers open to it, as an Asio acceptor hands out
/// sockets. Used from one thread at a time; its channels are independent of it once accepted.
/// Closing or destroying it refuses peers that connect later and completes pending accepts
/// with channel_closed.
class acceptor {
 public:
  /// The executor the acceptor runs its handlers on by default.
  using executor_type = asio::any_io_executor;

  /// Starts listening on `uri`; channels opened by peers queue until accepted. Throws
  /// std::system_error when the name is taken or the URI is malformed. `options` give the
  /// local timing of accepted channels; their tier table is the connecting side's.
  acceptor(const executor_type& ex, std::string_view uri, const channel_options& options = {}) : executor_(ex) {
    std::error_code ec;
    state_ = detail::listen(ex, uri, options, ec);
    if (auto problem = describe_problem(uri, options); ec == error::invalid_argument && !problem.empty())
      throw std::system_error(ec, "bellows::acceptor: " + problem);
    if (ec) throw std::system_error(ec, "bellows::acceptor");
  }
  /// As above, but reports a failure in `ec` (then the acceptor is not open) instead of throwing;
  /// describe_problem() says what is wrong with a URI refused with invalid_argument.
  acceptor(const executor_type& ex, std::string_view uri, const channel_options& options, std::error_code& ec)
      : executor_(ex), state_(detail::listen(ex, uri, options, ec)) {}
  /// The moved-from acceptor is closed and keeps its executor, as a moved-from Asio acceptor does.
  acceptor(acceptor&& other) noexcept : executor_(other.executor_), state_(std::move(other.state_)) {}
  /// Closes this acceptor, then takes over `other`'s, which is left closed with its executor.
  acceptor& operator=(acceptor&& other) noexcept {
    if (this != &other) {
      close();
      executor_ = other.executor_;
      state_ = std::move(other.state_);
    }
    return *this;
  }
  ~acceptor() { close(); }

  /// The executor the acceptor was made with; kept after close and move.
  executor_type get_executor() const noexcept { return executor_; }
  /// Whether it listens: false once closed, moved from, or made with a failure in `ec`.
  bool is_open() const noexcept { return state_ != nullptr; }

  /// The completion signature of async_accept.
  using accept_signature = void(std::error_code, channel);

  /// Takes the next channel a peer opened; channels opened while nobody accepts wait in order.
  /// The channel's executor is the acceptor's.
  ///
  /// @param token The completion token; signature `void(std::error_code ec, channel peer)`.
  ///
  /// Errors: asio::error::operation_aborted when the acceptor is closed while waiting;
  /// error::channel_closed (posted) when it is already closed or moved from.
  /// Cancellation: any type (terminal, partial, total) completes the wait with
  /// asio::error::operation_aborted and takes nothing; the acceptor goes on accepting.
  template <
      detail::token_not_executor<accept_signature> CompletionToken = asio::default_completion_token_t<executor_type>>
  auto async_accept(CompletionToken&& token = {}) {
    return detail::initiate<accept_signature>(std::forward<CompletionToken>(token), state_.get(), executor_,
                                              &detail::start_accept, executor_);
  }

  /// As above, and the channel's executor is `channel_executor` (of the same io_context), as
  /// Asio's `async_accept(executor, token)`: `async_accept(asio::make_strand(io), token)` puts
  /// each accepted channel on a strand of its own. The accept's own handler still defaults to
  /// the acceptor's executor.
  template <detail::executor Executor, ASIO_COMPLETION_TOKEN_FOR(accept_signature)
                                           CompletionToken = asio::default_completion_token_t<executor_type>>
  auto async_accept(const Executor& channel_executor, CompletionToken&& token = {}) {
    return detail::initiate<accept_signature>(std::forward<CompletionToken>(token), state_.get(), executor_,
                                              &detail::start_accept, executor_type(channel_executor));
  }

  /// Stops listening; pending accepts complete with operation_aborted and channels not yet
  /// accepted are refused. Accepted channels are not affected.
  void close() noexcept {
    if (state_) detail::close(*state_);
    state_.reset();
  }

 private:
  executor_type executor_;
  std::shared_ptr<detail::acceptor_state> state_;
};

}  // namespace bellows
