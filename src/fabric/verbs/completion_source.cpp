#include "fabric/verbs/completion_source.hpp"

#include <asio/error.hpp>
#include <asio/post.hpp>

#include <arpa/inet.h>
#include <fcntl.h>
#include <unistd.h>
#include <algorithm>
#include <cerrno>
#include <cstring>
#include <utility>

namespace bellows::verbs {
namespace {

std::error_code last_error(int fallback) { return {errno != 0 ? errno : fallback, std::system_category()}; }

std::error_code to_error(ibv_wc_status status) {
  // A flushed request never ran: its queue pair went to the error state (disconnect, close).
  if (status == IBV_WC_WR_FLUSH_ERR) return asio::error::operation_aborted;
  if (status == IBV_WC_REM_ACCESS_ERR || status == IBV_WC_REM_INV_REQ_ERR || status == IBV_WC_LOC_PROT_ERR)
    return std::make_error_code(std::errc::permission_denied);
  if (status == IBV_WC_RETRY_EXC_ERR || status == IBV_WC_RNR_RETRY_EXC_ERR)
    return std::make_error_code(std::errc::connection_reset);
  return std::make_error_code(std::errc::io_error);
}

}  // namespace

proto::outcome<std::shared_ptr<completion_source>> completion_source::create(const asio::any_io_executor& io,
                                                                             ibv_context* context, ibv_pd* pd) {
  ibv_comp_channel* channel = ::ibv_create_comp_channel(context);
  if (channel == nullptr) return last_error(ENOMEM);
  const int flags = ::fcntl(channel->fd, F_GETFL);
  if (flags < 0 || ::fcntl(channel->fd, F_SETFL, flags | O_NONBLOCK) < 0) {
    const auto ec = last_error(EINVAL);
    ::ibv_destroy_comp_channel(channel);
    return ec;
  }
  ibv_cq* cq = ::ibv_create_cq(context, queue_depth, nullptr, channel, 0);
  if (cq == nullptr) {
    const auto ec = last_error(ENOMEM);
    ::ibv_destroy_comp_channel(channel);
    return ec;
  }
  ibv_srq_init_attr srq_attr{};
  srq_attr.attr.max_wr = receives;
  srq_attr.attr.max_sge = 1;
  ibv_srq* srq = ::ibv_create_srq(pd, &srq_attr);
  if (srq == nullptr) {
    const auto ec = last_error(ENOMEM);
    ::ibv_destroy_cq(cq);
    ::ibv_destroy_comp_channel(channel);
    return ec;
  }
  std::shared_ptr<completion_source> source(new completion_source(io, channel, cq, srq));
  if (!source->register_slots(pd)) return last_error(ENOMEM);
  for (int slot = 0; slot < receives; ++slot)
    if (!source->post_receive(static_cast<std::uint64_t>(slot))) return last_error(ENOMEM);
  return source;
}

completion_source::completion_source(const asio::any_io_executor& io, ibv_comp_channel* channel, ibv_cq* cq,
                                     ibv_srq* srq)
    : channel_(channel), cq_(cq), srq_(srq), descriptor_(io) {
  descriptor_.assign(::dup(channel->fd));  // the channel's own descriptor stays libibverbs'
}

completion_source::~completion_source() {
  asio::error_code ignored;
  descriptor_.close(ignored);
  // Queue pairs using the queue and the SRQ are gone by now (their links hold this source).
  if (unacknowledged_events_ != 0) ::ibv_ack_cq_events(cq_, unacknowledged_events_);
  ::ibv_destroy_srq(srq_);
  if (slots_mr_ != nullptr) ::ibv_dereg_mr(slots_mr_);
  ::ibv_destroy_cq(cq_);
  ::ibv_destroy_comp_channel(channel_);
}

bool completion_source::register_slots(ibv_pd* pd) {
  // Outside the budget, like the CQ: a fixed 16 KiB per reactor and device, whole pages.
  const std::size_t bytes = std::size_t{receives} * receive_bytes;
  slots_.reset(static_cast<std::byte*>(std::aligned_alloc(4096, bytes)));
  if (!slots_) return false;
  const int local_only = IBV_ACCESS_LOCAL_WRITE;  // an int: the macro masks it with another enum
  slots_mr_ = ::ibv_reg_mr(pd, slots_.get(), bytes, local_only);
  return slots_mr_ != nullptr;
}

bool completion_source::post_receive(std::uint64_t slot) {
  ibv_sge sge{reinterpret_cast<std::uintptr_t>(slots_.get() + slot * receive_bytes),
              static_cast<std::uint32_t>(receive_bytes), slots_mr_->lkey};
  ibv_recv_wr wr{};
  wr.wr_id = receive_tag | slot;
  wr.sg_list = &sge;
  wr.num_sge = 1;
  ibv_recv_wr* bad = nullptr;
  return ::ibv_post_srq_recv(srq_, &wr, &bad) == 0;
}

std::size_t completion_source::poll(const std::function<void(const completion_event&)>& report) {
  ibv_wc wc[16];
  const int n = ::ibv_poll_cq(cq_, 16, wc);
  if (n <= 0) return 0;
  for (int i = 0; i < n; ++i) {
    completion_event e;
    e.qp_num = wc[i].qp_num;
    e.wr_id = wc[i].wr_id;
    if (wc[i].status != IBV_WC_SUCCESS) {
      e.kind = completion_event::what::failed;
      e.ec = to_error(wc[i].status);
    } else if (wc[i].opcode == IBV_WC_RECV_RDMA_WITH_IMM) {
      e.kind = completion_event::what::doorbell;
      e.channel = ntohl(wc[i].imm_data);
    } else if (wc[i].opcode == IBV_WC_RECV) {
      e.kind = completion_event::what::message;
      const std::uint64_t slot = wc[i].wr_id & ~receive_tag;
      e.length = std::min<std::uint32_t>(wc[i].byte_len, receive_bytes);
      std::memcpy(e.bytes.data(), slots_.get() + slot * receive_bytes, e.length);
    } else {
      e.kind = completion_event::what::write_done;
    }
    // A used receive, failed or not, goes back at once, or the SRQ drains. (The opcode of a
    // failed completion is undefined; the work request id tells.)
    if (is_receive(wc[i].wr_id)) post_receive(wc[i].wr_id & ~receive_tag);
    report(e);
  }
  return static_cast<std::size_t>(n);
}

void completion_source::take_channel_events() {
  ibv_cq* cq = nullptr;
  void* context = nullptr;
  while (::ibv_get_cq_event(channel_, &cq, &context) == 0) ++unacknowledged_events_;
  // Acknowledging takes a lock in libibverbs: do it in batches, not per event.
  if (unacknowledged_events_ >= 64) {
    ::ibv_ack_cq_events(cq_, unacknowledged_events_);
    unacknowledged_events_ = 0;
  }
}

bool completion_source::sleep_until_completion(std::function<void()> woken) {
  if (::ibv_req_notify_cq(cq_, 0) != 0) return false;
  sleeping_ = true;
  descriptor_.async_wait(asio::posix::descriptor_base::wait_read,
                         [self = shared_from_this(), woken = std::move(woken)](std::error_code ec) {
                           self->sleeping_ = false;
                           if (ec) return;
                           self->take_channel_events();
                           woken();  // possibly spurious: the caller polls and decides
                         });
  return true;
}

int completion_source::notify_when_idle() {
  if (!idle_notified_) {
    if (::ibv_req_notify_cq(cq_, 0) != 0) return -1;
    idle_notified_ = true;
  }
  return descriptor_.native_handle();
}

void completion_source::take_idle_events() {
  if (!std::exchange(idle_notified_, false)) return;
  take_channel_events();
}

void completion_source::cancel_sleep() {
  if (!sleeping_) return;
  asio::error_code ignored;
  descriptor_.cancel(ignored);
}

}  // namespace bellows::verbs
