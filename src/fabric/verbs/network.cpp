#include "fabric/verbs/network.hpp"

#include "fabric/verbs/liveness.hpp"

#include "proto/wire.hpp"

#include <bellows/error.hpp>

#include <cerrno>

namespace bellows::verbs {
namespace {

constexpr int resolve_timeout_ms = 2000;

rdma_conn_param connection_parameters(const void* private_data, std::size_t length) {
  rdma_conn_param p{};
  p.private_data = private_data;
  p.private_data_len = static_cast<std::uint8_t>(length);
  // bellows only writes: no RDMA READ or atomics to make room for.
  p.responder_resources = 0;
  p.initiator_depth = 0;
  // Six, not the maximum of seven: Soft-RoCE takes seven as "retry forever", and a dead peer
  // must fail the queue pair (liveness.hpp).
  p.retry_count = retry_count;
  // A receiver that ran out of doorbell receives replenishes them on its next poll: wait for it.
  p.rnr_retry_count = 7;
  return p;
}

std::error_code errno_or(int fallback) { return {errno != 0 ? errno : fallback, std::system_category()}; }

void reject(rdma_cm_id* id, std::error_code why) {
  const auto refusal = handshake::encode_refusal(why);
  ::rdma_reject(id, refusal.data(), static_cast<std::uint8_t>(refusal.size()));
}

}  // namespace

/// An open in progress: the id, and once the address is resolved the link and its memory.
struct network::pending_open {
  rdma_cm_id* id = nullptr;
  std::uint32_t channel_id = 0;
  std::vector<tier> tiers;
  std::uint64_t max_message_size = 0;
  std::shared_ptr<verbs::transport> via;
  std::shared_ptr<qp_link> link;
  open_handler done;
  bool finished = false;
};

/// A connection request accepted, waiting for the connection to be established.
struct network::pending_accept {
  std::weak_ptr<listener> from;
  std::shared_ptr<qp_link> link;
  open_request request;
};

class network::listener {
 public:
  listener(std::shared_ptr<cm_channel> events, rdma_cm_id* id, accepting_check accepting, accept_hook on_accept)
      : events_(std::move(events)), id_(id), accepting_(std::move(accepting)), on_accept_(std::move(on_accept)) {}
  ~listener() {
    events_->forget(id_);
    ::rdma_destroy_id(id_);
  }
  bool accepting() const { return accepting_ && accepting_(); }
  bool accept(const opened_channel& c) const { return on_accept_ && on_accept_(c); }

 private:
  std::shared_ptr<cm_channel> events_;
  rdma_cm_id* id_;
  accepting_check accepting_;
  accept_hook on_accept_;
};

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

void network::hand_over(const std::shared_ptr<qp_link>& link, rdma_cm_id* id) {
  events_->watch(id, [weak = std::weak_ptr<qp_link>(link)](const cm_event& e) {
    if (auto l = weak.lock()) l->on_cm_event(e);
  });
}

// ---- opening ----

std::shared_ptr<network::pending_open> network::open(const sockaddr_storage& to, std::vector<tier> tiers,
                                                     std::uint64_t max_message_size, open_handler done) {
  auto p = std::make_shared<pending_open>();
  p->tiers = std::move(tiers);
  p->max_message_size = max_message_size;
  p->done = std::move(done);
  p->channel_id = next_channel_id();
  // The real request names memory registered later; a probe of the same size finds a tier list
  // too long for the connection's private data before anything is allocated.
  open_request probe{p->channel_id, {1, 64}, {1, 64}, max_message_size, p->tiers};
  if (!handshake::encode(probe)) {
    finish_open(p, make_error_code(error::invalid_argument));
    return p;
  }
  auto channel = events();
  if (!channel) {
    finish_open(p, channel.failure());
    return p;
  }
  auto id = (*channel)->create_id();
  if (!id) {
    finish_open(p, id.failure());
    return p;
  }
  p->id = *id;
  (*channel)->watch(p->id, [this, weak = std::weak_ptr<pending_open>(p)](const cm_event& e) {
    if (auto self = weak.lock()) on_open_event(self, e);
  });
  auto target = to;
  if (::rdma_resolve_addr(p->id, nullptr, reinterpret_cast<sockaddr*>(&target), resolve_timeout_ms) != 0)
    finish_open(p, errno_or(EHOSTUNREACH));
  return p;
}

void network::on_open_event(const std::shared_ptr<pending_open>& p, const cm_event& e) {
  if (p->finished) return;
  switch (e.type) {
    case RDMA_CM_EVENT_ADDR_RESOLVED: {
      auto t = transport_for(p->id->verbs);
      if (!t) return finish_open(p, t.failure());
      p->via = *t;
      auto& pool = p->via->pool();
      auto control = pool.allocate(proto::control_block::size);
      if (!control) return finish_open(p, control.failure());
      auto ring = pool.allocate(p->tiers[0].ring_bytes());
      if (!ring) {
        pool.release(control->handle);
        return finish_open(p, ring.failure());
      }
      auto inline_limit = p->via->create_queue_pair(p->id);
      if (!inline_limit) {
        pool.release(control->handle);
        pool.release(ring->handle);
        return finish_open(p, inline_limit.failure());
      }
      p->link = std::make_shared<qp_link>(p->via, events_, p->id, p->channel_id, *inline_limit, *control, *ring);
      p->via->add(p->link);
      if (::rdma_resolve_route(p->id, resolve_timeout_ms) != 0) return finish_open(p, errno_or(EHOSTUNREACH));
      return;
    }
    case RDMA_CM_EVENT_ROUTE_RESOLVED: {
      const auto& l = *p->link;
      open_request request{p->channel_id,
                           {static_cast<std::uint32_t>(l.control().key), l.control().address},
                           {static_cast<std::uint32_t>(l.ring().key), l.ring().address},
                           p->max_message_size,
                           p->tiers};
      auto bytes = handshake::encode(request);
      auto parameters = connection_parameters(bytes->data(), bytes->size());
      limit_silence(p->id, peer_timeout_);
      if (::rdma_connect(p->id, &parameters) != 0) return finish_open(p, errno_or(ECONNREFUSED));
      return;
    }
    case RDMA_CM_EVENT_ESTABLISHED: {
      auto answer = handshake::decode_answer(e.private_data);
      if (!answer) return finish_open(p, answer.failure());
      p->link->established(answer->channel_id, {answer->control.key, answer->control.address});
      auto setup = make_setup(*p->link, answer->channel_id, answer->control, answer->ring);
      setup.tiers = p->tiers;
      setup.max_message_size = p->max_message_size;
      hand_over(p->link, p->id);
      return finish_open(p, opened_channel{p->link, std::move(setup)});
    }
    case RDMA_CM_EVENT_REJECTED: return finish_open(p, handshake::decode_refusal(e.private_data));
    default: {
      auto ec = to_error(e);
      return finish_open(p, ec ? ec : make_error_code(error::connection_reset));
    }
  }
}

void network::finish_open(const std::shared_ptr<pending_open>& p, proto::outcome<opened_channel> result) {
  if (p->finished) return;
  p->finished = true;
  if (!result) {
    // Undo what was set up: the link (its queue pair, id and memory) or just the id.
    if (p->link) {
      p->link->retire(p->link->local_id(), {p->link->control().handle, p->link->ring().handle});
    } else if (p->id != nullptr) {
      events_->forget(p->id);
      ::rdma_destroy_id(p->id);
    }
    p->id = nullptr;
    p->link.reset();
  }
  auto done = std::move(p->done);
  if (done) done(std::move(result));
}

void network::cancel(const std::shared_ptr<pending_open>& p) {
  p->done = nullptr;  // the caller answers its own operation
  finish_open(p, make_error_code(error::channel_closed));
}

// ---- accepting ----

proto::outcome<std::shared_ptr<network::listener>> network::listen(const sockaddr_storage& at,
                                                                   accepting_check accepting, accept_hook on_accept) {
  auto channel = events();
  if (!channel) return channel.failure();
  auto id = (*channel)->create_id();
  if (!id) return id.failure();
  auto where = at;
  if (::rdma_bind_addr(*id, reinterpret_cast<sockaddr*>(&where)) != 0 || ::rdma_listen(*id, 128) != 0) {
    const auto ec = errno_or(EADDRNOTAVAIL);
    ::rdma_destroy_id(*id);
    return ec;
  }
  auto l = std::make_shared<listener>(*channel, *id, std::move(accepting), std::move(on_accept));
  (*channel)->watch(*id, [this, weak = std::weak_ptr<listener>(l)](const cm_event& e) {
    auto self = weak.lock();
    if (e.type != RDMA_CM_EVENT_CONNECT_REQUEST) return;
    if (!self) {
      reject(e.id, std::make_error_code(std::errc::connection_refused));
      ::rdma_destroy_id(e.id);
      return;
    }
    on_connect_request(self, e);
  });
  return l;
}

void network::on_connect_request(const std::shared_ptr<listener>& l, const cm_event& e) {
  auto refuse = [&](std::error_code why) {
    reject(e.id, why);
    ::rdma_destroy_id(e.id);
  };
  auto request = handshake::decode_request(e.private_data);
  if (!request) return refuse(request.failure());
  if (!l->accepting()) return refuse(std::make_error_code(std::errc::connection_refused));
  auto t = transport_for(e.id->verbs);
  if (!t) return refuse(t.failure());
  auto& pool = (*t)->pool();
  auto control = pool.allocate(proto::control_block::size);
  if (!control) return refuse(control.failure());
  auto ring = pool.allocate(request->tiers[0].ring_bytes());
  if (!ring) {
    pool.release(control->handle);
    return refuse(ring.failure());
  }
  auto inline_limit = (*t)->create_queue_pair(e.id);
  if (!inline_limit) {
    pool.release(control->handle);
    pool.release(ring->handle);
    return refuse(inline_limit.failure());
  }
  auto p = std::make_shared<pending_accept>();
  p->from = l;
  p->request = std::move(*request);
  p->link = std::make_shared<qp_link>(*t, events_, e.id, next_channel_id(), *inline_limit, *control, *ring);
  (*t)->add(p->link);
  events_->watch(e.id, [this, p](const cm_event& event) { on_accept_event(p, event); });
  const auto answer = handshake::encode(open_answer{p->link->local_id(),
                                                    {static_cast<std::uint32_t>(control->key), control->address},
                                                    {static_cast<std::uint32_t>(ring->key), ring->address}});
  auto parameters = connection_parameters(answer.data(), answer.size());
  limit_silence(e.id, peer_timeout_);
  if (::rdma_accept(e.id, &parameters) != 0) {
    reject(e.id, errno_or(ECONNABORTED));
    p->link->retire(p->link->local_id(), {control->handle, ring->handle});
  }
}

void network::on_accept_event(const std::shared_ptr<pending_accept>& p, const cm_event& e) {
  auto& link = p->link;
  const std::vector<std::uint64_t> memory{link->control().handle, link->ring().handle};
  if (e.type != RDMA_CM_EVENT_ESTABLISHED) {
    // The opener gave up or vanished before the connection was up.
    return link->retire(link->local_id(), memory);
  }
  const auto& q = p->request;
  link->established(q.channel_id, {q.control.key, q.control.address});
  hand_over(link, e.id);
  auto setup = make_setup(*link, q.channel_id, q.control, q.ring);
  setup.tiers = q.tiers;
  setup.max_message_size = q.max_message_size;
  auto l = p->from.lock();
  if (!l || !l->accept(opened_channel{link, std::move(setup)})) link->retire(link->local_id(), memory);
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
  for (auto& [context, t] : transports_) t->shutdown();
  transports_.clear();
}

}  // namespace bellows::verbs
