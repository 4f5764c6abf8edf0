#include "fabric/verbs/transport.hpp"

#include "fabric/verbs/qp_link.hpp"

#include <bellows/error.hpp>

#include <fcntl.h>
#include <unistd.h>
#include <algorithm>
#include <bit>
#include <cerrno>

namespace bellows::verbs {
namespace {

std::error_code last_error(int fallback) { return {errno != 0 ? errno : fallback, std::system_category()}; }

}  // namespace

proto::outcome<std::shared_ptr<transport>> transport::create(const asio::any_io_executor& io, ibv_context* context,
                                                             fabric::memory_budget& budget, int wake_fd,
                                                             std::chrono::milliseconds probe_interval) {
  ibv_pd* pd = ::ibv_alloc_pd(context);
  if (pd == nullptr) return last_error(ENOMEM);
  std::shared_ptr<transport> t(new transport(io, context, pd, budget, wake_fd, probe_interval));
  auto source = completion_source::create(io, context, pd);
  if (!source) return source.failure();
  t->source_ = std::move(*source);
  // Async events arrive on the device context's descriptor, which rdma_cm shares with us; a
  // non-blocking read lets the reactor take them without ever waiting.
  const int flags = ::fcntl(context->async_fd, F_GETFL);
  if (flags < 0 || ::fcntl(context->async_fd, F_SETFL, flags | O_NONBLOCK) < 0) return last_error(EINVAL);
  t->async_events_.assign(::dup(context->async_fd));
  return t;
}

transport::transport(const asio::any_io_executor& io, ibv_context* context, ibv_pd* pd, fabric::memory_budget& budget,
                     int wake_fd, std::chrono::milliseconds probe_interval)
    : context_(context),
      pd_(pd),
      pool_(pd, budget),
      async_events_(io),
      wake_fd_(wake_fd),
      probe_interval_(probe_interval),
      probe_timer_(std::in_place, io),
      signalled_capacity_(completion_source::queue_depth - completion_source::receives) {}

transport::~transport() {
  asio::error_code ignored;
  async_events_.close(ignored);
  // Queue pairs are gone (their links held this transport); the CQ and SRQ go before the
  // registrations and the protection domain (members, destroyed after this body).
  source_.reset();
  if (staging_mr_ != nullptr) ::ibv_dereg_mr(staging_mr_);
}

proto::outcome<std::uint32_t> transport::create_queue_pair(rdma_cm_id* id) {
  // Small frames (credits, acks, doorbells, short messages) go inline: no staging copy and no
  // local key. Devices differ in how much they allow; ask for a generous amount, then less.
  for (std::uint32_t inline_bytes : {256u, 128u, 64u, 0u}) {
    ibv_qp_init_attr attr{};
    attr.send_cq = attr.recv_cq = source_->queue();
    attr.srq = source_->shared_receive_queue();
    attr.cap.max_send_wr = send_queue_depth;
    attr.cap.max_send_sge = 1;
    attr.cap.max_inline_data = inline_bytes;
    attr.qp_type = IBV_QPT_RC;
    attr.sq_sig_all = 0;
    if (::rdma_create_qp(id, pd_.get(), &attr) == 0) return attr.cap.max_inline_data;
    if (errno != EINVAL) break;
  }
  return last_error(ENOMEM);
}

void transport::add(const std::shared_ptr<qp_link>& link) {
  links_[link->qp_num()] = link;
  if (link->probes_peer()) schedule_probes();
}

void transport::remove(std::uint32_t qp_num, std::size_t signalled_outstanding) {
  sends_completed(qp_num, UINT64_MAX);
  signalled_retired(signalled_outstanding);
  links_.erase(qp_num);
}

void transport::report_failure_later(std::uint32_t qp_num, std::error_code ec) {
  late_failures_.emplace_back(qp_num, ec);
}

std::shared_ptr<qp_link> transport::find(std::uint32_t qp_num) const {
  auto it = links_.find(qp_num);
  return it == links_.end() ? nullptr : it->second;
}

std::size_t transport::poll() {
  std::size_t found = kept_.size() + late_failures_.size();
  if (!kept_.empty()) {
    std::vector<completion_event> kept;
    kept.swap(kept_);
    for (const auto& e : kept) handle(e, true);
  }
  if (!late_failures_.empty()) {
    auto failures = std::move(late_failures_);
    late_failures_.clear();
    for (const auto& [qp_num, ec] : failures)
      if (auto link = find(qp_num)) link->on_failure(ec);
  }
  return found + take(true);
}

void transport::reap_sends() { take(false); }

std::size_t transport::take(bool dispatch) {
  std::size_t found = 0;
  // A batch at a time, up to a bound, so one busy peer cannot hold the reactor here.
  for (int batch = 0; batch < 8; ++batch) {
    const std::size_t n = source_->poll([&](const completion_event& e) { handle(e, dispatch); });
    found += n;
    if (n == 0) break;
  }
  return found;
}

void transport::handle(const completion_event& e, bool dispatch) {
  // A queue pair already closed: its late or flushed completions say nothing new.
  auto link = find(e.qp_num);
  if (!completion_source::is_receive(e.wr_id)) {
    // A send. Failed ones report themselves whether signalled or not; the link knows which
    // were, and so which the CQ had room reserved for.
    if (link) signalled_retired(link->on_sends_completed(e.wr_id));
    sends_completed(e.qp_num, e.wr_id);
    if (e.kind == completion_event::what::write_done) return;
  }
  if (!link) return;
  if (e.kind == completion_event::what::failed) link->on_failure(e.ec, !dispatch);
  if (!dispatch) {
    kept_.push_back(e);
    return;
  }
  if (e.kind == completion_event::what::doorbell) link->on_doorbell(e.channel);
  if (e.kind == completion_event::what::message) link->on_message(std::span(e.bytes).first(e.length));
}

void transport::sends_completed(std::uint32_t qp_num, std::uint64_t up_to) {
  bool any = false;
  for (auto& w : staged_) {
    if (w.qp_num == qp_num && w.wr_index <= up_to && !w.done) {
      w.done = true;
      any = true;
    }
  }
  if (any) release_staging();
}

void transport::release_staging() {
  while (!staged_.empty() && staged_.front().done) staged_.pop_front();
  if (staged_.empty()) {
    staging_head_ = staging_tail_ = 0;
  } else {
    staging_tail_ = staged_.front().begin;
  }
}

std::error_code transport::replace_staging(std::size_t wanted, std::size_t needed) {
  // The old ring's pages are unpinned first, so that under a locked-memory limit they count
  // for the new one.
  if (staging_mr_ != nullptr) ::ibv_dereg_mr(std::exchange(staging_mr_, nullptr));
  staging_memory_.reset();
  staging_capacity_ = staging_head_ = staging_tail_ = 0;
  std::error_code ec;
  // Where `wanted` is refused, a ring that holds just the frame costs one write in flight at a
  // time instead of the channel. stage() does not ask for a refused size again.
  for (std::size_t bytes : {wanted, needed}) {
    staging_memory_.reset(static_cast<std::byte*>(std::aligned_alloc(4096, bytes)));
    if (!staging_memory_) return std::make_error_code(std::errc::not_enough_memory);
    // Only this side reads it: local access is all the device needs.
    staging_mr_ = ::ibv_reg_mr(pd_.get(), staging_memory_.get(), bytes, 0);
    if (staging_mr_ != nullptr) {
      staging_capacity_ = bytes;
      return {};
    }
    ec = last_error(ENOMEM);
    staging_memory_.reset();
    staging_refused_ = std::min(staging_refused_, bytes);
    if (bytes == needed) break;
  }
  return ec;
}

transport::staging_chunk transport::stage(std::size_t bytes, std::uint32_t qp_num, std::uint64_t wr_index,
                                          std::error_code& ec) {
  ec = {};
  // The ring holds at least two of the largest frames so that one can be in flight while the
  // next is copied; it is replaced by a larger one only when nothing is in flight in it. Under
  // a locked-memory limit too small for that, it holds one frame.
  const std::size_t needed = (bytes + 4095) & ~std::size_t{4095};
  std::size_t wanted = std::max(first_staging_bytes, std::bit_ceil(bytes * 2));
  if (wanted >= staging_refused_) wanted = std::max(needed, staging_capacity_);
  if (staging_capacity_ < wanted) {
    if (!staged_.empty()) return {};
    ec = replace_staging(wanted, needed);
    if (ec) return {};
  }
  const std::size_t capacity = staging_capacity_;
  std::size_t at = SIZE_MAX;
  if (staged_.empty()) {
    at = 0;
  } else if (staging_head_ > staging_tail_) {
    if (capacity - staging_head_ >= bytes) {
      at = staging_head_;
    } else if (staging_tail_ >= bytes) {
      at = 0;
    }
  } else if (staging_tail_ - staging_head_ >= bytes) {
    at = staging_head_;
  }
  if (at == SIZE_MAX) return {};
  // Eight-byte aligned starts keep the copies cheap.
  staging_head_ = at + ((bytes + 7) & ~std::size_t{7});
  if (staging_head_ > capacity) staging_head_ = capacity;
  staged_.push_back({at, staging_head_, qp_num, wr_index});
  if (staged_.size() == 1) staging_tail_ = at;
  return {staging_memory_.get() + at, staging_mr_->lkey};
}

bool transport::prepare_to_sleep() {
  if (!source_->sleeping()) {
    const int fd = wake_fd_;
    if (!source_->sleep_until_completion([fd] {
          const std::uint64_t one = 1;
          [[maybe_unused]] auto n = ::write(fd, &one, sizeof one);
        }))
      return false;
  }
  // What completed before the queue was armed raised no notification.
  return poll() == 0;
}

bool transport::prepare_to_idle(std::vector<int>& descriptors) {
  const int fd = source_->notify_when_idle();
  if (fd < 0) return false;
  descriptors.push_back(fd);
  return poll() == 0;
}

void transport::arm() {
  armed_ = true;
  watch_async_events();
  schedule_probes();
}

void transport::disarm() {
  armed_ = false;
  source_->cancel_sleep();
  if (async_waiting_) {
    asio::error_code ignored;
    async_events_.cancel(ignored);
  }
  if (probes_scheduled_ && probe_timer_) probe_timer_->cancel();
}

void transport::shutdown() {
  armed_ = false;
  auto links = std::move(links_);
  links_.clear();
  for (auto& [qp_num, link] : links) link->shutdown();
  kept_.clear();
  probe_timer_.reset();
}

void transport::watch_async_events() {
  if (async_waiting_ || !armed_) return;
  async_waiting_ = true;
  async_events_.async_wait(asio::posix::descriptor_base::wait_read, [self = shared_from_this()](std::error_code ec) {
    self->async_waiting_ = false;
    if (ec) return;
    self->take_async_events();
    self->watch_async_events();
  });
}

void transport::schedule_probes() {
  if (probes_scheduled_ || !armed_ || !probe_timer_ || probe_interval_.count() == 0) return;
  // Links to peers on this host are not probed; with only those, no timer wakes this process.
  if (std::none_of(links_.begin(), links_.end(), [](const auto& entry) { return entry.second->probes_peer(); })) return;
  probes_scheduled_ = true;
  probe_timer_->expires_after(probe_interval_);
  // Weak: a cancelled wait may sit in the io_context after the reactor let go of this transport.
  probe_timer_->async_wait([weak = weak_from_this()](std::error_code ec) {
    auto self = weak.lock();
    if (!self) return;
    self->probes_scheduled_ = false;
    if (!ec) {
      // A probe that cannot be posted fails its link, which may leave the map.
      std::vector<std::shared_ptr<qp_link>> links;
      links.reserve(self->links_.size());
      for (auto& [qp_num, link] : self->links_) links.push_back(link);
      for (auto& link : links) link->probe_if_quiet();
    }
    // After a disarm() cancelled it, an arm() may have come while this wait was still queued
    // (and so scheduled nothing): the probes go on if the transport is armed again.
    self->schedule_probes();
  });
}

void transport::take_async_events() {
  ibv_async_event event;
  while (::ibv_get_async_event(context_, &event) == 0) {
    const auto type = event.event_type;
    std::uint32_t qp_num = 0;
    if (type == IBV_EVENT_QP_FATAL || type == IBV_EVENT_QP_REQ_ERR || type == IBV_EVENT_QP_ACCESS_ERR ||
        type == IBV_EVENT_PATH_MIG_ERR)
      qp_num = event.element.qp->qp_num;
    const bool device_wide = type == IBV_EVENT_CQ_ERR || type == IBV_EVENT_DEVICE_FATAL;
    // Acknowledged before acting: destroying a queue pair waits for its events' acks.
    ::ibv_ack_async_event(&event);
    const auto ec = type == IBV_EVENT_QP_ACCESS_ERR ? make_error_code(error::protocol_violation)
                                                    : make_error_code(error::connection_reset);
    if (qp_num != 0) {
      if (auto link = find(qp_num)) link->on_failure(ec);
    } else if (device_wide) {
      auto links = links_;
      for (auto& [num, link] : links) link->on_failure(ec);
    }
  }
}

}  // namespace bellows::verbs
