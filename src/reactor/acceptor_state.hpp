#pragma once
// The state behind bellows::acceptor: the provider's listener, channels peers opened that
// nobody accepted yet, and pending async_accept operations.

#include "fabric/connector.hpp"

#include <bellows/channel.hpp>
#include <bellows/detail/channel_access.hpp>
#include <bellows/options.hpp>

#include <deque>
#include <memory>
#include <string_view>

namespace bellows::detail {

class reactor;

class acceptor_state : public std::enable_shared_from_this<acceptor_state> {
 public:
  acceptor_state(reactor& r, channel_options options);
  ~acceptor_state();
  /// Starts listening on `address` through `via`.
  std::error_code listen(fabric::connector& via, std::string_view address);

  asio::any_io_executor executor() const;
  std::uint64_t next_id() noexcept { return ++last_op_id_; }
  void start_accept(std::uint64_t id, channel_completion done);
  void cancel(std::uint64_t id);
  void close();
  /// A peer opened a channel over one of the links this acceptor's listener took.
  bool on_channel_opened(const fabric::opened_channel& c);
  void shutdown();

 private:
  reactor& reactor_;
  std::shared_ptr<fabric::listener> listener_;
  channel_options options_;
  std::deque<channel> backlog_;
  std::deque<std::pair<std::uint64_t, channel_completion>> waiting_;
  std::uint64_t last_op_id_ = 0;
  bool closed_ = false;
  bool reactor_gone_ = false;
};

}  // namespace bellows::detail
