#pragma once
// A shm link: everything two processes share, set up once per pair of reactors and carrying any
// number of channels. Each side owns an arena the other maps; the peer writes frames, credits
// and acks into ours and rings our doorbell ring. A SOCK_SEQPACKET socket on an abstract name
// carries the arena and eventfd descriptors (SCM_RIGHTS), channel open/accept/detach, and, by
// closing, the news that the peer died.

#include "fabric/endpoint.hpp"
#include "fabric/link.hpp"
#include "fabric/poller.hpp"
#include "fabric/shm/arena.hpp"
#include "fabric/shm/doorbell_ring.hpp"
#include "fabric/shm/link_protocol.hpp"

#include <bellows/error.hpp>

#include <asio/io_context.hpp>
#include <asio/posix/stream_descriptor.hpp>

#include <deque>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace bellows::shm {

struct link_options {
  std::size_t arena_bytes = std::size_t{16} << 30;
  bool allow_other_users = false;
  /// The reactor's eventfd, sent to the peer so that its doorbells can wake us.
  int wake_fd = -1;
};

/// The abstract socket name for shm://NAME.
std::string socket_name(const std::string& name);

class link final : public fabric::link, public fabric::poller, public std::enable_shared_from_this<link> {
 public:
  using open_handler = std::function<void(proto::outcome<fabric::channel_setup>)>;
  /// Server side: a peer opens a channel. Return true after attaching an endpoint to
  /// `setup.local_id`, or false to refuse it.
  using accept_hook = std::function<bool(link&, const fabric::channel_setup& setup)>;
  using failure_hook = std::function<void(link&, std::error_code)>;

  /// Client side: connects to shm://`name`; the handshake finishes in the background and
  /// channels opened meanwhile wait for it.
  static proto::outcome<std::shared_ptr<link>> connect(const asio::any_io_executor& io, const std::string& name,
                                                       const link_options& options, memory_budget& budget);
  /// Server side: a socket just accepted on a listening name.
  static proto::outcome<std::shared_ptr<link>> accept(const asio::any_io_executor& io, int fd,
                                                      const link_options& options, memory_budget& budget);
  ~link() override;

  void set_hooks(accept_hook on_accept, failure_hook on_failure);
  /// Starts (or stops) reading the socket; a stopped link holds no outstanding work, so an
  /// io_context with nothing pending can return from run().
  void arm() override;
  void disarm() override;
  /// The io_context is being destroyed: drop the socket without touching its services again.
  void shutdown() override;

  /// Opens a channel whose first rings use `tiers[0]`; `done` gets the agreed set-up.
  /// Returns the local id to cancel it with, or 0 when `done` was already told why not.
  std::uint32_t open_channel(const std::vector<tier>& tiers, std::uint64_t max_message_size, open_handler done);
  /// Abandons an open still waiting for the peer; its answer will be undone when it comes.
  void cancel_open(std::uint32_t local_id);
  /// Answers an open whose opener withdrew it before we read it: refused, no channel made.
  void refuse_withdrawn(const link_message& open);
  void attach(std::uint32_t local_id, fabric::channel_endpoint* endpoint) override;
  /// Tells the peer we will not write into its channel `peer_id` again.
  void send_detach(std::uint32_t peer_id) override;
  /// The local channel is gone: its regions are freed once the peer has detached too, since
  /// until then the peer may still write into them.
  void retire(std::uint32_t local_id, std::vector<std::uint64_t> regions) override;
  bellows::endpoint peer_endpoint() const override { return peer_endpoint_; }

  /// Pops doorbells and reports them to endpoints; returns how many it found.
  std::size_t poll() override;
  bool prepare_to_sleep() override;
  void last_look() override;
  void woke_up() override;
  void trim() override { arena_.trim(); }
  bool ready() const noexcept { return state_ == state::ready; }
  bool failed() const noexcept { return state_ == state::failed; }
  /// Failed, or a link this side opened that no channel uses any more (its peer then sees the
  /// socket close).
  bool finished() const noexcept override { return failed() || (!name_.empty() && unused()); }
  void dropped() noexcept override { dropped_ = true; }
  /// Still polled by the reactor: a link that is not may not carry new channels.
  bool served() const noexcept { return !dropped_; }
  /// No channel is open or opening (retired ones may still await the peer's detach): the link
  /// can be dropped.
  bool unused() const noexcept;
  const std::string& name() const noexcept { return name_; }

  proto::outcome<fabric::region> register_region(std::size_t length) override;
  void release_region(std::uint64_t handle) override;
  std::error_code write(fabric::remote_address dst, fabric::byte_pieces pieces) override;
  std::error_code write_frame(fabric::remote_address dst, fabric::byte_pieces body, fabric::remote_address trailer_dst,
                              std::span<const std::byte> trailer) override;
  std::error_code write_from_file(fabric::remote_address dst, std::span<const std::byte> prefix,
                                  fabric::file_piece piece) override;
  void ring_doorbell(std::uint32_t peer_channel) override;
  bool ring_doorbell_unless_polled(std::uint32_t peer_channel, fabric::polled_hint hint) override;
  bool may_skip_doorbells() const override { return true; }
  std::size_t registered_bytes() const override { return arena_.registered_bytes(); }

 private:
  enum class state { handshaking, ready, failed };
  /// Where `length` bytes at `dst` of the peer's arena are mapped here, if all are the peer's.
  proto::outcome<std::byte*> peer_bytes(fabric::remote_address dst, std::uint64_t length);
  struct channel_slot {
    fabric::channel_endpoint* endpoint = nullptr;
    std::optional<open_handler> opening;
    fabric::region control;
    fabric::region ring;
    bool in_use = false;
    bool peer_detached = false;
    bool retired = false;
    std::vector<std::uint64_t> graveyard;
  };
  struct outgoing {
    link_message message;
    std::vector<int> fds;
  };

  link(const asio::any_io_executor& io, int fd, arena local, const link_options& options);

  void start_handshake();
  void send(link_message m, std::vector<int> fds = {});
  void flush_outgoing();
  /// Reads what the socket holds, then waits for more unless a wait is out.
  void read_messages();
  /// Reads and handles what the socket holds now; never waits.
  void read_queued();
  void handle_batch(std::vector<std::pair<link_message, std::vector<int>>>& batch);
  void handle(const link_message& m, std::vector<int>& fds);
  void on_hello(const link_message& m, std::vector<int>& fds);
  void on_open(const link_message& m);
  void on_accepted(const link_message& m);
  void on_refused(const link_message& m);
  void on_detach(const link_message& m);
  void fail(std::error_code ec);
  std::uint32_t allocate_id();
  /// A slot with the channel's control block and first ring already carved from the arena.
  proto::outcome<std::uint32_t> new_channel_slot(const tier& first);
  void free_slot(std::uint32_t id);
  fabric::channel_setup setup_for(std::uint32_t id, std::uint32_t peer_id, const link_message& m) const;
  channel_slot* slot(std::uint32_t id);

  std::optional<asio::posix::stream_descriptor> socket_;  // reset when the io_context shuts down
  arena arena_;
  mapping peer_;
  std::uint64_t peer_key_ = 0;
  std::uint64_t local_key_ = 0;
  int peer_wake_fd_ = -1;
  doorbell::producer peer_doorbells_;
  std::uint64_t doorbells_consumed_ = 0;
  link_options options_;
  std::string name_;
  bellows::endpoint peer_endpoint_;
  state state_ = state::handshaking;
  bool dropped_ = false;
  bool armed_ = false;  // reading wanted; a wait cancelled by disarm() then re-armed is resumed
  bool reading_ = false;
  bool writing_ = false;
  std::deque<outgoing> outgoing_;
  std::deque<link_message> waiting_for_handshake_;
  std::vector<channel_slot> slots_;  // index = id - 1
  std::vector<std::uint32_t> free_ids_;
  accept_hook on_accept_;
  failure_hook on_failure_;
  /// Told to channels opened after the failure (a descriptor limit reads better than a reset).
  std::error_code why_failed_ = make_error_code(error::connection_reset);
};

}  // namespace bellows::shm
