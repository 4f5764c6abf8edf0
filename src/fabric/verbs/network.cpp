#include "fabric/verbs/network_parts.hpp"

#include <unistd.h>

namespace bellows::verbs {

network::network(const asio::any_io_executor& io, fabric::memory_budget& budget, int wake_fd,
                 std::chrono::milliseconds peer_timeout)
    : io_(io), budget_(budget), wake_fd_(wake_fd), peer_timeout_(peer_timeout) {}

network::~network() = default;

proto::outcome<std::shared_ptr<cm_channel>> network::events() {
  if (events_) return events_;
  auto channel = cm_channel::create(io_);
  // Without RDMA support in the kernel there is no rdma_cm device file at all.
  if (!channel) return std::make_error_code(std::errc::no_such_device);
  events_ = std::move(*channel);
  events_->set_armed(armed_);
  return events_;
}

proto::outcome<std::shared_ptr<transport>> network::transport_for(ibv_context* context) {
  if (context == nullptr) return std::make_error_code(std::errc::no_such_device);
  if (auto it = transports_.find(context); it != transports_.end()) return it->second;
  auto t = transport::create(io_, context, budget_, wake_fd_, probe_interval(peer_timeout_));
  if (!t) return t.failure();
  if (armed_) (*t)->arm();
  transports_[context] = *t;
  return t;
}

std::uint32_t network::next_channel_id() noexcept {
  // 0 is the detach immediate.
  if (++last_channel_id_ == 0) ++last_channel_id_;
  return last_channel_id_;
}

fabric::channel_setup make_setup(const qp_link& link, std::uint32_t peer_id, const remote_block& peer_control,
                                 const remote_block& peer_ring) {
  fabric::channel_setup s;
  s.local_id = link.local_id();
  s.peer_id = peer_id;
  s.control = link.control();
  s.ring = link.ring();
  s.peer_control = {peer_control.key, peer_control.address};
  s.peer_ring = {peer_ring.key, peer_ring.address};
  // Each of the peer's rings is a registration of its own, with its own key: acks may name any
  // key, and the peer's device refuses a write outside what that key covers.
  s.peer_window_any_key = true;
  s.peer_window_begin = 0;
  s.peer_window_end = UINT64_MAX;
  return s;
}

void network::wake_reactor() const {
  // The answer comes as a completion: a reactor idle since before this device's completion
  // queue existed watches only older descriptors, and must look (and watch) again.
  const std::uint64_t one = 1;
  [[maybe_unused]] auto n = ::write(wake_fd_, &one, sizeof one);
}

void network::hand_over(const std::shared_ptr<qp_link>& link, rdma_cm_id* id) {
  events_->watch(id, [weak = std::weak_ptr<qp_link>(link)](const cm_event& e) {
    if (auto l = weak.lock()) l->on_cm_event(e);
  });
}

// ---- reactor side ----

std::size_t network::poll() {
  std::size_t found = 0;
  for (auto& [context, t] : transports_) found += t->poll();
  return found;
}

bool network::prepare_to_sleep() {
  for (auto& [context, t] : transports_)
    if (!t->prepare_to_sleep()) return false;
  return true;
}

bool network::prepare_to_idle(std::vector<int>& descriptors) {
  for (auto& [context, t] : transports_)
    if (!t->prepare_to_idle(descriptors)) return false;
  return true;
}

void network::woke_up() {
  for (auto& [context, t] : transports_) t->woke_up();
}

void network::arm() {
  armed_ = true;
  if (events_) events_->set_armed(true);
  for (auto& [context, t] : transports_) t->arm();
}

void network::disarm() {
  armed_ = false;
  if (events_) events_->set_armed(false);
  for (auto& [context, t] : transports_) t->disarm();
}

bool network::busy() const noexcept {
  for (const auto& [context, t] : transports_)
    if (t->busy()) return true;
  return false;
}

void network::trim() {
  for (auto& [context, t] : transports_) t->pool().trim();
}

std::uint64_t network::registrations() const noexcept {
  std::uint64_t n = 0;
  for (const auto& [context, t] : transports_) n += t->pool().registrations();
  return n;
}

std::size_t network::connections() const noexcept {
  std::size_t n = 0;
  for (const auto& [context, t] : transports_) n += t->links();
  return n;
}

void network::shutdown() {
  armed_ = false;
  // Their timers must go while the io_context's services still exist.
  for (auto& weak : pending_accepts_)
    if (auto p = weak.lock()) p->deadline.reset();
  pending_accepts_.clear();
  for (auto& [context, t] : transports_) t->shutdown();
  transports_.clear();
}

}  // namespace bellows::verbs
