#include "fabric/verbs/qp_link.hpp"

#include <bellows/error.hpp>

#include <arpa/inet.h>
#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>

namespace bellows::verbs {
namespace {

/// How long a write may wait for room in the send queue before the link is declared broken:
/// RC retransmits for a few seconds before it gives up on a silent peer, so this only fires
/// when the device itself stopped completing work.
constexpr auto room_timeout = std::chrono::seconds(10);

constexpr std::uint32_t detach_immediate = 0;

/// The peer's address as rdma_cm routed to it.
bellows::endpoint endpoint_of(const sockaddr* peer) {
  bellows::endpoint who;
  who.provider = "rdma";
  if (peer == nullptr) return who;
  char text[INET6_ADDRSTRLEN] = {};
  if (peer->sa_family == AF_INET) {
    const auto* v4 = reinterpret_cast<const sockaddr_in*>(peer);
    ::inet_ntop(AF_INET, &v4->sin_addr, text, sizeof text);
    who.port = ntohs(v4->sin_port);
  } else if (peer->sa_family == AF_INET6) {
    const auto* v6 = reinterpret_cast<const sockaddr_in6*>(peer);
    ::inet_ntop(AF_INET6, &v6->sin6_addr, text, sizeof text);
    who.port = ntohs(v6->sin6_port);
  }
  who.address = text;
  return who;
}

/// Both ends on this host: rdma_cm routed the peer to one of our own addresses.
bool same_address(const sockaddr* local, const sockaddr* peer) {
  if (local == nullptr || peer == nullptr || local->sa_family != peer->sa_family) return false;
  if (local->sa_family == AF_INET)
    return reinterpret_cast<const sockaddr_in*>(local)->sin_addr.s_addr ==
           reinterpret_cast<const sockaddr_in*>(peer)->sin_addr.s_addr;
  if (local->sa_family == AF_INET6)
    return std::memcmp(&reinterpret_cast<const sockaddr_in6*>(local)->sin6_addr,
                       &reinterpret_cast<const sockaddr_in6*>(peer)->sin6_addr, sizeof(in6_addr)) == 0;
  return false;
}

}  // namespace

qp_link::qp_link(std::shared_ptr<transport> t, std::shared_ptr<cm_channel> cm, rdma_cm_id* id, std::uint32_t local_id,
                 std::uint32_t max_inline)
    : transport_(std::move(t)),
      cm_(std::move(cm)),
      id_(id),
      qp_num_(id->qp->qp_num),
      local_id_(local_id),
      max_inline_(max_inline) {
  inline_copy_.reserve(max_inline_);
  peer_endpoint_ = endpoint_of(rdma_get_peer_addr(id));
  peer_on_this_host_ = same_address(rdma_get_local_addr(id), rdma_get_peer_addr(id));
}

qp_link::~qp_link() {
  // Normally destroy() ran already; this is the io_context going away under an open link.
  drop_windows();  // before the queue pair: a window bound to it holds it
  if (id_ != nullptr) {
    if (id_->qp != nullptr) ::rdma_destroy_qp(id_);
    ::rdma_destroy_id(id_);
  }
  take_back_all();
}

void qp_link::ready_to_send() {
  if (state_ == state::connecting) state_ = state::handshaking;
}

void qp_link::established(std::uint32_t peer_id, fabric::remote_address peer_control) {
  peer_id_ = peer_id;
  peer_control_ = peer_control;
  on_message_ = nullptr;
  if (state_ == state::connecting || state_ == state::handshaking) state_ = state::open;
}

proto::outcome<fabric::region> qp_link::grant(const fabric::region& block) {
  window_ptr window;
  std::uint32_t key = 0;
  if (auto ec = bind_window(transport_->pool().memory_region(block.handle), block.address, block.length, window, key))
    return ec;
  fabric::region granted = block;
  granted.key = key;
  windows_[block.handle] = std::move(window);
  return granted;
}

std::error_code qp_link::bind_window(ibv_mr* mr, std::uint64_t address, std::size_t length, window_ptr& window,
                                     std::uint32_t& key) {
  if (state_ != state::handshaking && state_ != state::open)
    return failure_ ? failure_ : make_error_code(error::connection_reset);
  window.reset(::ibv_alloc_mw(transport_->protection_domain(), IBV_MW_TYPE_2));
  if (!window) return std::error_code(errno != 0 ? errno : ENOMEM, std::system_category());
  if (auto ec = wait_for_room(false)) return ec;
  ibv_send_wr wr{};
  wr.opcode = IBV_WR_BIND_MW;
  wr.bind_mw.mw = window.get();
  wr.bind_mw.rkey = ::ibv_inc_rkey(window->rkey);
  wr.bind_mw.bind_info.mr = mr;
  wr.bind_mw.bind_info.addr = address;
  wr.bind_mw.bind_info.length = length;
  wr.bind_mw.bind_info.mw_access_flags = IBV_ACCESS_REMOTE_WRITE;
  // Placed before any later request of this queue pair, so before the message that names it.
  if (auto ec = post(wr, false)) return ec;
  key = wr.bind_mw.rkey;
  return {};
}

void qp_link::drop_windows() noexcept {
  windows_.clear();
  lent_.clear();
}

void qp_link::take_memory(const fabric::region& control, const fabric::region& ring) {
  control_ = control;
  ring_ = ring;
}

void qp_link::take_back(std::uint64_t handle) {
  // Deallocating invalidates the window at once: the block is out of the peer's reach before
  // the pool may hand it to another channel, or the application has its buffer back.
  if ((handle & lent_handle_bit) != 0) {
    lent_.erase(handle);
    return;
  }
  windows_.erase(handle);
  transport_->pool().release(handle);
}

void qp_link::take_back_all() {
  for (auto handle : graveyard_)
    if (handle != 0) take_back(handle);
  graveyard_.clear();
  drop_windows();
}

void qp_link::on_message(std::span<const std::byte> bytes) {
  // A copy: the handler may end the handshake, which lets go of the handler itself.
  if (on_message_) return message_handler(on_message_)(bytes);
  // Nothing is SENT on an open channel: the peer does not speak this protocol.
  on_failure(make_error_code(error::protocol_violation));
}

std::error_code qp_link::send_message(std::span<const std::byte> bytes) {
  if (state_ != state::handshaking) return failure_ ? failure_ : make_error_code(error::connection_reset);
  const std::span<const std::byte> piece[] = {bytes};
  // Signalled: a link retired right after its refusal waits for that completion to close.
  return post_bytes(IBV_WR_SEND, {}, piece, true);
}

void qp_link::attach(std::uint32_t, fabric::channel_endpoint* endpoint) {
  endpoint_ = endpoint;
  // A doorbell may have come between the connection and the channel's creation; the frames it
  // announced are in the ring.
  if (endpoint_ != nullptr && std::exchange(doorbell_waiting_, false)) endpoint_->on_doorbell();
}

void qp_link::on_doorbell(std::uint32_t immediate) {
  if (immediate == detach_immediate) {
    if (std::exchange(peer_detached_, true)) return;
    if (endpoint_ != nullptr) endpoint_->on_peer_detached();
    return;
  }
  if (immediate != local_id_) return on_failure(make_error_code(error::protocol_violation));
  if (endpoint_ != nullptr) {
    endpoint_->on_doorbell();
  } else {
    doorbell_waiting_ = true;
  }
}

std::size_t qp_link::on_sends_completed(std::uint64_t up_to) {
  // RC completes a queue pair's requests in order: this one finished every earlier one too.
  completed_ = std::max(completed_, std::min(up_to, posted_));
  std::size_t retired = 0;
  for (; !signalled_.empty() && signalled_.front() <= completed_; ++retired) signalled_.pop_front();
  if (closing_ && completed_ >= flush_mark_) destroy();
  return retired;
}

void qp_link::on_failure(std::error_code ec, bool quietly) {
  if (state_ == state::closed) return;
  // The peer's device refused a write into memory the peer itself named (in an ack or the
  // handshake): the peer broke the protocol.
  if (ec == std::errc::permission_denied) ec = make_error_code(error::protocol_violation);
  if (state_ != state::failed) {
    state_ = state::failed;
    failure_ = ec;
    // Flushes every request still queued; the peer's side sees the connection go.
    if (id_ != nullptr) ::rdma_disconnect(id_);
  }
  if (retired_ && !quietly) return destroy();
  if (quietly || endpoint_ == nullptr || std::exchange(failure_told_, true)) return;
  endpoint_->on_link_failed(failure_);
}

void qp_link::on_cm_event(const cm_event& e) {
  switch (e.type) {
    case RDMA_CM_EVENT_DISCONNECTED:
    case RDMA_CM_EVENT_DEVICE_REMOVAL: {
      // The detach that preceded a graceful disconnect may still sit in the completion queue.
      auto self = shared_from_this();
      transport_->poll();
      on_failure(to_error(e));
      return;
    }
    default: return;  // TIMEWAIT_EXIT and the like: nothing for the channel
  }
}

void qp_link::send_detach(std::uint32_t) {
  if (state_ != state::open || detach_sent_) return;
  detach_sent_ = true;
  post_immediate(detach_immediate, true);
  flush_mark_ = posted_;
}

void qp_link::retire(std::uint32_t, std::vector<std::uint64_t> regions) {
  endpoint_ = nullptr;
  retired_ = true;
  graveyard_.insert(graveyard_.end(), regions.begin(), regions.end());
  if (state_ == state::handshaking) {
    // A refusal may still be on its way to the peer: disconnecting now would flush it.
    flush_mark_ = posted_;
    return close_when_flushed();
  }
  if (state_ != state::open) return destroy();
  send_detach(peer_id_);
  close_when_flushed();
}

void qp_link::close_when_flushed() {
  if (closing_) return;
  closing_ = true;
  transport_->closing_started();
  if (completed_ >= flush_mark_ || !can_post()) destroy();
}

void qp_link::destroy() {
  if (state_ == state::closed) return;
  auto self = shared_from_this();  // the transport may hold the last reference
  state_ = state::closed;
  if (std::exchange(closing_, false)) transport_->closing_finished();
  if (id_ != nullptr) {  // null once shutdown() let go of it
    cm_->forget(id_);
    ::rdma_disconnect(id_);
    // Windows first: one bound to the queue pair holds it, and Soft-RoCE then takes most of a
    // minute to give the queue pair up.
    drop_windows();
    ::rdma_destroy_qp(id_);
    ::rdma_destroy_id(id_);
    id_ = nullptr;
  }
  // The queue pair is gone, so nothing can reach these any more: back to the pool.
  take_back_all();
  transport_->remove(qp_num_, signalled_.size());
  signalled_.clear();
}

void qp_link::shutdown() {
  // The io_context is going away: verbs objects go now, nothing touches its services again.
  drop_windows();  // before the queue pair they are bound to
  if (id_ != nullptr) {
    if (id_->qp != nullptr) ::rdma_destroy_qp(id_);
    ::rdma_destroy_id(id_);
    id_ = nullptr;
  }
  if (state_ != state::closed) state_ = state::failed;
  if (!failure_) failure_ = make_error_code(error::connection_reset);
}

proto::outcome<fabric::region> qp_link::register_region(std::size_t length) {
  auto block = transport_->pool().allocate(length);
  if (!block) return block;
  auto granted = grant(*block);
  if (!granted) transport_->pool().release(block->handle);
  return granted;
}

void qp_link::release_region(std::uint64_t handle) { take_back(handle); }

bool qp_link::next_is_signalled(bool must) const noexcept {
  return must || posted_ + 1 - last_signalled_ >= transport::signal_interval;
}

std::error_code qp_link::wait_for_room(bool must_signal) {
  const bool signalled = next_is_signalled(must_signal);
  const auto deadline = std::chrono::steady_clock::now() + room_timeout;
  for (unsigned round = 1;; ++round) {
    if (!can_post()) return failure_ ? failure_ : make_error_code(error::connection_reset);
    // One slot stays free for the detach, so a channel can always say goodbye.
    const bool queue_room = posted_ - completed_ + 2 <= transport::send_queue_depth;
    if (queue_room && (!signalled || transport_->completion_room())) return {};
    transport_->reap_sends();
    if (round % 64 == 0 && std::chrono::steady_clock::now() > deadline) {
      on_failure(std::make_error_code(std::errc::timed_out), true);
      transport_->report_failure_later(qp_num_, failure_);
      return failure_;
    }
  }
}

std::error_code qp_link::post(ibv_send_wr& wr, bool must_signal) {
  const bool signal = next_is_signalled(must_signal);
  wr.wr_id = ++posted_;
  if (signal) {
    wr.send_flags |= IBV_SEND_SIGNALED;
    last_signalled_ = posted_;
    signalled_.push_back(posted_);
    transport_->signalled_posted();
  }
  ibv_send_wr* bad = nullptr;
  if (const int rc = ::ibv_post_send(id_->qp, &wr, &bad); rc != 0) {
    --posted_;
    if (signal) {
      signalled_.pop_back();
      transport_->signalled_retired(1);
    }
    // Told to the channel from the next poll: this runs inside the channel's own write.
    on_failure(std::error_code(rc, std::system_category()), true);
    transport_->report_failure_later(qp_num_, failure_);
    return failure_;
  }
  return {};
}

std::error_code qp_link::write(fabric::remote_address dst, fabric::byte_pieces pieces) {
  // A write fails its channel with the error the channel reports: a queue pair that broke
  // (a completion's or the device's own errno) is the peer's connection reset.
  const auto as_channel_error = [](std::error_code ec) {
    return !ec || ec == error::protocol_violation ? ec : make_error_code(error::connection_reset);
  };
  if (state_ != state::open) return as_channel_error(failure_ ? failure_ : make_error_code(error::connection_reset));
  // An rkey is 32 bits; anything wider is not one this peer could have granted.
  if (dst.key > UINT32_MAX || dst.address % 8 != 0) return make_error_code(error::protocol_violation);
  std::size_t total = 0;
  for (auto p : pieces) total += p.size();
  if (total > largest_request) return as_channel_error(write_in_requests(dst, pieces));
  return as_channel_error(post_bytes(IBV_WR_RDMA_WRITE, dst, pieces, false));
}

std::error_code qp_link::post_bytes(ibv_wr_opcode opcode, fabric::remote_address dst, fabric::byte_pieces pieces,
                                    bool must_signal) {
  std::size_t total = 0;
  for (auto p : pieces) total += p.size();
  if (total == 0) return {};
  if (total > UINT32_MAX) return make_error_code(error::invalid_argument);

  const bool staged = total > max_inline_;
  if (auto ec = wait_for_room(staged || must_signal)) return ec;
  ibv_sge sge{};
  ibv_send_wr wr{};
  wr.opcode = opcode;
  wr.sg_list = &sge;
  wr.num_sge = 1;
  wr.wr.rdma.remote_addr = dst.address;
  wr.wr.rdma.rkey = static_cast<std::uint32_t>(dst.key);
  std::byte* out = nullptr;
  if (!staged) {
    // Inline data is copied by the post itself, so one contiguous scratch buffer serves all.
    inline_copy_.resize(total);
    out = inline_copy_.data();
    wr.send_flags = IBV_SEND_INLINE;
  } else {
    const auto deadline = std::chrono::steady_clock::now() + room_timeout;
    for (unsigned round = 1;; ++round) {
      std::error_code ec;
      auto chunk = transport_->stage(total, qp_num_, posted_ + 1, ec);
      if (ec) return ec;
      if (chunk.data != nullptr) {
        out = chunk.data;
        sge.lkey = chunk.local_key;
        break;
      }
      transport_->reap_sends();
      if (!can_post()) return failure_;
      if (round % 64 == 0 && std::chrono::steady_clock::now() > deadline) {
        on_failure(std::make_error_code(std::errc::timed_out), true);
        transport_->report_failure_later(qp_num_, failure_);
        return failure_;
      }
    }
  }
  std::size_t at = 0;
  for (auto p : pieces) {
    std::memcpy(out + at, p.data(), p.size());
    at += p.size();
  }
  sge.addr = reinterpret_cast<std::uintptr_t>(out);
  sge.length = static_cast<std::uint32_t>(total);
  return post(wr, staged || must_signal);
}

void qp_link::post_immediate(std::uint32_t immediate, bool must_signal) {
  if (wait_for_room(must_signal)) return;
  ibv_send_wr wr{};
  wr.opcode = IBV_WR_RDMA_WRITE_WITH_IMM;
  wr.num_sge = 0;  // zero bytes: only the immediate, which consumes one of the peer's SRQ receives
  wr.imm_data = htonl(immediate);
  wr.wr.rdma.remote_addr = peer_control_.address;
  wr.wr.rdma.rkey = static_cast<std::uint32_t>(peer_control_.key);
  post(wr, must_signal);
}

void qp_link::probe_if_quiet() {
  // A peer that detached has nothing more to say; its disconnect ends the queue pair.
  if (state_ != state::open || closing_ || peer_detached_) return;
  // A peer on this host cannot vanish while this process lives unless its process ends, and
  // then its kernel's connection manager disconnects the queue pair at once: a probe would
  // only cost a post (a system call per write on Soft-RoCE) and learn nothing more.
  if (!probes_peer()) return;
  if (std::exchange(posted_at_last_probe_, posted_) != posted_) return;  // its own writes will fail
  // Never waits for room: a full queue has writes in flight, which fail on their own.
  const bool queue_room = posted_ - completed_ + 2 <= transport::send_queue_depth;
  if (!queue_room || (next_is_signalled(false) && !transport_->completion_room())) return;
  ibv_send_wr wr{};
  wr.opcode = IBV_WR_RDMA_WRITE;
  wr.num_sge = 0;  // zero bytes: the peer's device acknowledges it, nothing is placed
  wr.wr.rdma.remote_addr = peer_control_.address;
  wr.wr.rdma.rkey = static_cast<std::uint32_t>(peer_control_.key);
  post(wr, false);
  posted_at_last_probe_ = posted_;
}

void qp_link::ring_doorbell(std::uint32_t peer_channel) {
  if (state_ != state::open) return;
  post_immediate(peer_channel, false);
}

}  // namespace bellows::verbs
