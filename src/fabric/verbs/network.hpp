#pragma once
// The rdma:// side of one reactor: the rdma_cm event channel, a transport per device, and the
// opening and accepting of channels. Opening resolves the address and the route, registers
// the channel's control block and first ring, creates the queue pair and connects; once the
// connection is up, each side grants its memory through windows bound to its queue pair and
// proves it holds the pre-shared key, if any (handshake.hpp). Every step is an rdma_cm event
// or a completion read through Asio: nothing blocks.

#include "fabric/connector.hpp"
#include "fabric/endpoint.hpp"
#include "fabric/memory_budget.hpp"
#include "fabric/verbs/cm_channel.hpp"
#include "fabric/verbs/handshake.hpp"
#include "fabric/verbs/qp_link.hpp"
#include "fabric/verbs/transport.hpp"

#include <bellows/tier.hpp>

#include <asio/io_context.hpp>

#include <sys/socket.h>

#include <chrono>
#include <functional>
#include <map>
#include <memory>
#include <span>
#include <string_view>
#include <vector>

namespace bellows::verbs {

struct opened_channel {
  std::shared_ptr<qp_link> link;
  fabric::channel_setup setup;
};

/// Polled by the reactor: the completion queues of every device's transport.
class network final : public fabric::poller {
 public:
  using open_handler = std::function<void(proto::outcome<opened_channel>)>;
  /// A peer's channel is connected: return true after attaching an endpoint to it, false to
  /// refuse it (the peer's channel then fails with connection_reset).
  using accept_hook = std::function<bool(const opened_channel&)>;
  /// Whether a listener still takes channels; asked before anything is registered for one.
  using accepting_check = std::function<bool()>;

  struct pending_open;
  class listener;

  /// `peer_timeout`: context_options::peer_timeout (liveness.hpp).
  network(const asio::any_io_executor& io, fabric::memory_budget& budget, int wake_fd,
          std::chrono::milliseconds peer_timeout);
  ~network();
  network(const network&) = delete;
  network& operator=(const network&) = delete;

  /// Opens a channel to `to`; `done` is called once, unless cancel() came first.
  /// `key`: channel_options::pre_shared_key (empty: none).
  std::shared_ptr<pending_open> open(const sockaddr_storage& to, std::vector<tier> tiers,
                                     std::uint64_t max_message_size, std::string_view key, open_handler done);
  void cancel(const std::shared_ptr<pending_open>& p);
  /// Listens on `at` until the listener is destroyed.
  proto::outcome<std::shared_ptr<listener>> listen(const sockaddr_storage& at, std::string_view key,
                                                   accepting_check accepting, accept_hook on_accept);

  std::size_t poll() override;
  bool prepare_to_sleep() override;
  bool prepare_to_idle(std::vector<int>& descriptors) override;
  void woke_up() override;
  void arm() override;
  void disarm() override;
  /// A closing link is flushing its last writes: the reactor keeps polling for them.
  bool busy() const noexcept override;
  /// Unregisters the blocks the pools keep for reuse (the budget is short).
  void trim() override;
  void shutdown() override;
  bool finished() const noexcept override { return false; }
  /// Queue-pair links open or closing.
  std::size_t connections() const noexcept override;
  /// ibv_reg_mr calls by the pools so far: once warm, enlargements add none.
  std::uint64_t registrations() const noexcept;

 private:
  struct pending_accept;

  proto::outcome<std::shared_ptr<cm_channel>> events();
  proto::outcome<std::shared_ptr<transport>> transport_for(ibv_context* context);
  std::uint32_t next_channel_id() noexcept;
  static open_request request_of(const pending_open& p);
  void on_open_event(const std::shared_ptr<pending_open>& p, const cm_event& e);
  void send_opener_grant(const std::shared_ptr<pending_open>& p);
  void on_acceptor_grant(const std::shared_ptr<pending_open>& p, std::span<const std::byte> bytes);
  void finish_open(const std::shared_ptr<pending_open>& p, proto::outcome<opened_channel> result);
  void on_connect_request(const std::shared_ptr<listener>& l, const cm_event& e);
  void on_opener_grant(const std::shared_ptr<pending_accept>& p, std::span<const std::byte> bytes);
  static void refuse_grant(pending_accept& p, std::error_code why);
  static void finish_accept(pending_accept& p);
  void on_accept_event(const std::shared_ptr<pending_accept>& p, const cm_event& e);
  void wake_reactor() const;
  /// The link's id events go to the link from now on.
  void hand_over(const std::shared_ptr<qp_link>& link, rdma_cm_id* id);

  asio::any_io_executor io_;
  fabric::memory_budget& budget_;
  int wake_fd_;
  std::chrono::milliseconds peer_timeout_;
  bool armed_ = false;
  std::shared_ptr<cm_channel> events_;
  std::map<ibv_context*, std::shared_ptr<transport>> transports_;
  std::uint32_t last_channel_id_ = 0;
  std::vector<std::weak_ptr<pending_accept>> pending_accepts_;  // pruned as new ones come
};

/// The channel set-up both sides agree on, from this side's registrations and the peer's.
fabric::channel_setup make_setup(const qp_link& link, std::uint32_t peer_id, const remote_block& peer_control,
                                 const remote_block& peer_ring);

}  // namespace bellows::verbs
