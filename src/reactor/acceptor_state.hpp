#pragma once
// The state behind bellows::acceptor: the provider's listener, channels peers opened that
// nobody accepted yet, and pending async_accept operations.

#include "fabric/connector.hpp"
#include "reactor/reactor_lock.hpp"

#include <bellows/channel.hpp>
#include <bellows/detail/channel_access.hpp>
#include <bellows/options.hpp>

#include <atomic>
#include <deque>
#include <memory>
#include <mutex>
#include <string_view>

namespace bellows::detail {

class reactor;

class acceptor_state : public std::enable_shared_from_this<acceptor_state> {
 public:
  /// Destroyed under the reactor's lock, like a channel (see listen()).
  acceptor_state(reactor& r, asio::any_io_executor executor, channel_options options);
  ~acceptor_state();
  std::unique_lock<reactor_lock> hold() const;
  /// Starts listening on `address` through `via`.
  std::error_code listen(fabric::connector& via, std::string_view address);

  const asio::any_io_executor& executor() const noexcept { return executor_; }
  const asio::io_context* context_kept_busy() const noexcept;
  /// Called by the one thread that uses the acceptor at a time (the threading rule), unlocked.
  std::uint64_t next_id() noexcept { return ++last_op_id_; }
  /// The accepted channel's handlers run on `channel_executor` unless they name their own.
  void start_accept(std::uint64_t id, asio::any_io_executor channel_executor, channel_completion done);
  void cancel(std::uint64_t id);
  void close();
  /// A peer opened a channel over one of the links this acceptor's listener took.
  bool on_channel_opened(const fabric::opened_channel& c);
  void shutdown();

 private:
  struct waiting_accept {
    std::uint64_t id;
    asio::any_io_executor channel_executor;
    channel_completion done;
  };
  /// Hands `accepted` out on `to`'s executor.
  void hand_out(std::shared_ptr<channel_state> accepted, waiting_accept& to, std::error_code ec = {});

  reactor& reactor_;
  const asio::any_io_executor executor_;
  std::shared_ptr<fabric::listener> listener_;
  channel_options options_;
  // Not yet channels: the accept that takes one decides on which executor it runs.
  std::deque<std::shared_ptr<channel_state>> backlog_;
  std::deque<waiting_accept> waiting_;
  std::uint64_t last_op_id_ = 0;
  bool closed_ = false;
  std::atomic<bool> reactor_gone_ = false;
};

}  // namespace bellows::detail
