#pragma once
// A verbs link: one RC queue pair, set up by rdma_cm, carrying exactly one channel. Frames go
// out as RDMA WRITEs (inline when small, else copied into the transport's registered staging
// ring), doorbells as zero-byte RDMA WRITE WITH IMMEDIATE (immediate = the peer's channel id;
// 0 says "detached"). Writes on one queue pair are placed in the order posted, which is what
// the tail flag of a frame relies on. Closing flushes: the queue pair is destroyed only after
// the last write (the detach) completed, so a message whose send completed is never lost
// because the channel was destroyed right after.

#include "fabric/link.hpp"
#include "fabric/verbs/cm_channel.hpp"
#include "fabric/verbs/transport.hpp"

#include <deque>
#include <memory>
#include <vector>

namespace bellows::verbs {

class qp_link final : public fabric::link, public std::enable_shared_from_this<qp_link> {
 public:
  /// Takes `id`, whose queue pair exists, and the control block and first ring registered for it.
  qp_link(std::shared_ptr<transport> t, std::shared_ptr<cm_channel> cm, rdma_cm_id* id, std::uint32_t local_id,
          std::uint32_t max_inline, fabric::region control, fabric::region ring);
  ~qp_link() override;

  std::uint32_t qp_num() const noexcept { return qp_num_; }
  std::uint32_t local_id() const noexcept { return local_id_; }
  const fabric::region& control() const noexcept { return control_; }
  const fabric::region& ring() const noexcept { return ring_; }
  /// The connection is up and the peer's channel is `peer_id`, reachable at `peer_control`.
  void established(std::uint32_t peer_id, fabric::remote_address peer_control);
  /// rdma_cm events of the id, once connected.
  void on_cm_event(const cm_event& e);

  // From the transport.
  void on_doorbell(std::uint32_t immediate);
  /// Requests up to `up_to` completed; returns how many signalled ones that retired.
  std::size_t on_sends_completed(std::uint64_t up_to);
  /// The queue pair broke; the endpoint is told unless `quietly` (then on_failure tells it later).
  void on_failure(std::error_code ec, bool quietly = false);
  /// The io_context is going away: let go of the queue pair without touching its services.
  void shutdown();
  /// Called every probe interval: a link that posted nothing since the last call posts a
  /// zero-byte write, so that a dead peer fails it even while nothing else is in flight.
  void probe_if_quiet();

  // fabric::link
  void attach(std::uint32_t local_id, fabric::channel_endpoint* endpoint) override;
  void send_detach(std::uint32_t peer_id) override;
  void retire(std::uint32_t local_id, std::vector<std::uint64_t> regions) override;
  bellows::endpoint peer_endpoint() const override { return peer_endpoint_; }
  bool failed() const noexcept { return state_ == state::failed || state_ == state::closed; }

  proto::outcome<fabric::region> register_region(std::size_t length) override;
  void release_region(std::uint64_t handle) override;
  std::error_code write(fabric::remote_address dst, fabric::byte_pieces pieces) override;
  void ring_doorbell(std::uint32_t peer_channel) override;
  std::size_t registered_bytes() const override { return transport_->pool().bytes_in_use(); }

 private:
  enum class state { connecting, open, failed, closed };

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
};

}  // namespace bellows::verbs
