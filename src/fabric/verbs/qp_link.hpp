#pragma once
// A verbs link: one RC queue pair, set up by rdma_cm, carrying exactly one channel. Frames go
// out as RDMA WRITEs (inline when small, else copied into the transport's registered staging
// ring), doorbells as zero-byte RDMA WRITE WITH IMMEDIATE (immediate = the peer's channel id;
// 0 says "detached"). Writes on one queue pair are placed in the order posted, which is what
// the tail flag of a frame relies on. Closing flushes: the queue pair is destroyed only after
// the last write (the detach) completed, so a message whose send completed is never lost
// because the channel was destroyed right after.
//
// Every block the peer may write into is reached through a type-2 memory window bound to this
// queue pair (grant()): its key is worthless on any other queue pair, and the window is
// deallocated before the block returns to the pool. So is a receive buffer lent for a message
// above the rings' frames (lend()): it is registered while lent, and the peer RDMA-WRITEs the
// message straight into it. Taken back early (the channel torn down), a later write of the
// peer's fails its queue pair, which only that channel used. While the channel opens, the link carries
// the handshake's few SENT messages (handshake.hpp) to whoever listens for them.

#include "fabric/link.hpp"
#include "fabric/verbs/cm_channel.hpp"
#include "fabric/verbs/transport.hpp"

#include <deque>
#include <functional>
#include <memory>
#include <span>
#include <unordered_map>
#include <vector>

namespace bellows::verbs {

class qp_link final : public fabric::link, public std::enable_shared_from_this<qp_link> {
 public:
  using message_handler = std::function<void(std::span<const std::byte>)>;

  /// Takes `id`, whose queue pair exists; the channel's memory comes with take_memory().
  qp_link(std::shared_ptr<transport> t, std::shared_ptr<cm_channel> cm, rdma_cm_id* id, std::uint32_t local_id,
          std::uint32_t max_inline);
  ~qp_link() override;

  /// The queue pair may send (it is in RTS): grants and handshake messages can go.
  void ready_to_send();
  /// Messages SENT by the peer go to `h` until established(); after it, one is a violation.
  void listen_for_messages(message_handler h) { on_message_ = std::move(h); }
  std::error_code send_message(std::span<const std::byte> bytes);
  /// A memory window over `block` bound to this queue pair: the returned region's key lets the
  /// peer write into `block` through this queue pair only. Undone when the block is released.
  proto::outcome<fabric::region> grant(const fabric::region& block);
  /// The channel's control block and first ring, as granted.
  void take_memory(const fabric::region& control, const fabric::region& ring);

  std::uint32_t qp_num() const noexcept { return qp_num_; }
  rdma_cm_id* cm_id() const noexcept { return id_; }
  transport& transport_of() const noexcept { return *transport_; }
  std::uint32_t local_id() const noexcept { return local_id_; }
  const fabric::region& control() const noexcept { return control_; }
  const fabric::region& ring() const noexcept { return ring_; }
  /// The connection is up and the peer's channel is `peer_id`, reachable at `peer_control`.
  void established(std::uint32_t peer_id, fabric::remote_address peer_control);
  /// rdma_cm events of the id, once connected.
  void on_cm_event(const cm_event& e);

  // From the transport.
  void on_doorbell(std::uint32_t immediate);
  void on_message(std::span<const std::byte> bytes);
  /// Requests up to `up_to` completed; returns how many signalled ones that retired.
  std::size_t on_sends_completed(std::uint64_t up_to);
  /// The queue pair broke; the endpoint is told unless `quietly` (then on_failure tells it later).
  void on_failure(std::error_code ec, bool quietly = false);
  /// The io_context is going away: let go of the queue pair without touching its services.
  void shutdown();
  /// Called every probe interval: a link that posted nothing since the last call posts a
  /// zero-byte write, so that a dead peer fails it even while nothing else is in flight. A peer
  /// on this host is not probed: its kernel disconnects the queue pair when its process ends.
  void probe_if_quiet();
  bool probes_peer() const noexcept { return !peer_on_this_host_; }

  // fabric::link
  void attach(std::uint32_t local_id, fabric::channel_endpoint* endpoint) override;
  void send_detach(std::uint32_t peer_id) override;
  void retire(std::uint32_t local_id, std::vector<std::uint64_t> regions) override;
  bellows::endpoint peer_endpoint() const override { return peer_endpoint_; }
  bool failed() const noexcept { return state_ == state::failed || state_ == state::closed; }

  proto::outcome<fabric::region> register_region(std::size_t length) override;
  void release_region(std::uint64_t handle) override;
  bool can_lend() const override { return true; }
  std::optional<fabric::region> lend(std::span<std::byte> memory) override;
  std::error_code write(fabric::remote_address dst, fabric::byte_pieces pieces) override;
  std::error_code write_from_file(fabric::remote_address dst, std::span<const std::byte> prefix,
                                  fabric::file_piece piece) override;
  void ring_doorbell(std::uint32_t peer_channel) override;
  std::size_t registered_bytes() const override { return transport_->pool().bytes_in_use(); }

 private:
  enum class state { connecting, handshaking, open, failed, closed };

  struct window_release {
    void operator()(ibv_mw* mw) const noexcept { ::ibv_dealloc_mw(mw); }
  };
  using window_ptr = std::unique_ptr<ibv_mw, window_release>;
  struct registration_release {
    void operator()(ibv_mr* mr) const noexcept { ::ibv_dereg_mr(mr); }
  };
  /// An application's receive buffer lent to the peer: registered for as long as it is lent.
  /// The window is declared last so that it goes first.
  struct lent_buffer {
    std::unique_ptr<ibv_mr, registration_release> registration;
    window_ptr window;
  };
  /// Handles of lent buffers carry this bit; the pool's never do.
  static constexpr std::uint64_t lent_handle_bit = std::uint64_t{1} << 63;
  /// A write above this goes out as several staged requests, so that one large message never
  /// needs a staging ring of its own size.
  static constexpr std::size_t largest_request = std::size_t{256} << 10;

  bool can_post() const noexcept { return state_ == state::open || state_ == state::handshaking; }
  /// A type-2 window over `length` bytes of `mr` at `address`, bound to this queue pair, its
  /// key in `key`.
  std::error_code bind_window(ibv_mr* mr, std::uint64_t address, std::size_t length, window_ptr& window,
                              std::uint32_t& key);
  std::error_code write_in_requests(fabric::remote_address dst, fabric::byte_pieces pieces);
  /// Every window goes (lent buffers with theirs), before the queue pair they are bound to.
  void drop_windows() noexcept;
  std::error_code post_bytes(ibv_wr_opcode opcode, fabric::remote_address dst, fabric::byte_pieces pieces,
                             bool must_signal);
  /// Deallocates the window over `handle` (the peer can no longer reach it) and releases it.
  void take_back(std::uint64_t handle);
  void take_back_all();
  bool next_is_signalled(bool must) const noexcept;
  std::error_code post(ibv_send_wr& wr, bool must_signal);
  /// Waits, bounded, until the send queue and the CQ have room for one more request.
  std::error_code wait_for_room(bool signalled);
  void post_immediate(std::uint32_t immediate, bool must_signal);
  void close_when_flushed();
  void destroy();

  std::shared_ptr<transport> transport_;
  std::shared_ptr<cm_channel> cm_;
  rdma_cm_id* id_;
  std::uint32_t qp_num_;
  std::uint32_t local_id_;
  std::uint32_t peer_id_ = 0;
  std::uint32_t max_inline_;
  fabric::region control_;
  fabric::region ring_;
  fabric::remote_address peer_control_;
  fabric::channel_endpoint* endpoint_ = nullptr;
  bellows::endpoint peer_endpoint_;
  state state_ = state::connecting;
  std::error_code failure_;
  bool failure_told_ = false;
  bool doorbell_waiting_ = false;
  bool peer_detached_ = false;
  bool peer_on_this_host_ = false;
  bool detach_sent_ = false;
  bool retired_ = false;
  bool closing_ = false;
  std::uint64_t posted_ = 0;
  std::uint64_t completed_ = 0;
  std::uint64_t last_signalled_ = 0;
  std::uint64_t flush_mark_ = 0;
  std::uint64_t posted_at_last_probe_ = 0;
  std::deque<std::uint64_t> signalled_;
  std::vector<std::uint64_t> graveyard_;
  std::vector<std::byte> inline_copy_;
  message_handler on_message_;
  std::unordered_map<std::uint64_t, window_ptr> windows_;  // by block handle
  std::unordered_map<std::uint64_t, lent_buffer> lent_;    // by lent handle
  std::uint64_t lent_count_ = 0;
  std::vector<std::span<const std::byte>> request_pieces_;
  std::vector<std::byte> file_chunk_;
};

}  // namespace bellows::verbs
