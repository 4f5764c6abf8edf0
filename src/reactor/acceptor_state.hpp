#pragma once
// The state behind bellows::acceptor: the listening socket, channels peers opened that nobody
// accepted yet, and pending async_accept operations.

#include "fabric/endpoint.hpp"
#include "fabric/shm/link.hpp"
#include "fabric/verbs/network.hpp"

#include <bellows/channel.hpp>
#include <bellows/detail/channel_access.hpp>
#include <bellows/options.hpp>

#include <asio/posix/stream_descriptor.hpp>

#include <deque>
#include <memory>
#include <optional>
#include <string>

namespace bellows::detail {

class reactor;

class acceptor_state : public std::enable_shared_from_this<acceptor_state> {
 public:
  /// `shm_listener`: the listening socket of shm://NAME, or -1 for an rdma:// acceptor.
  acceptor_state(reactor& r, int shm_listener, channel_options options);
  /// Listens on rdma://`at` as well.
  std::error_code listen_rdma(const sockaddr_storage& at);
  ~acceptor_state();

  asio::any_io_executor executor() const;
  std::uint64_t next_id() noexcept { return ++last_op_id_; }
  void start_accept(std::uint64_t id, channel_completion done);
  void cancel(std::uint64_t id);
  void close();
  /// A peer opened a channel over one of the links this acceptor accepted.
  bool on_channel_opened(const std::shared_ptr<fabric::link>& link, const fabric::channel_setup& setup);
  void shutdown();

 private:
  void accept_links();
  /// At the descriptor limit a pending connection can be neither taken nor left (the listener
  /// would stay readable and the peer would wait forever): spend the spare descriptor to take
  /// it and close it at once, so that the peer's connect fails. False if none was waiting.
  bool turn_away_one();

  reactor& reactor_;
  std::optional<asio::posix::stream_descriptor> listener_;
  int spare_fd_ = -1;
  std::shared_ptr<verbs::network::listener> rdma_listener_;
  channel_options options_;
  std::deque<channel> backlog_;
  std::deque<std::pair<std::uint64_t, channel_completion>> waiting_;
  std::uint64_t last_op_id_ = 0;
  bool listening_ = false;
  bool closed_ = false;
  bool reactor_gone_ = false;
};

}  // namespace bellows::detail
