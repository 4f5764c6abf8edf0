#include "fabric/verbs/network.hpp"

#include "fabric/verbs/liveness.hpp"

#include "proto/wire.hpp"

#include <bellows/error.hpp>

#include <asio/steady_timer.hpp>

#include <unistd.h>

#include <cerrno>
#include <optional>
#include <string>

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
  std::string key;
  fabric::nonce nonce = fabric::fresh_nonce();
  open_acceptance acceptance;
  std::shared_ptr<verbs::transport> via;
  std::shared_ptr<qp_link> link;
  open_handler done;
  bool finished = false;
};

/// A connection request accepted, waiting for the opener's grant and proof. Until it checks
/// out, the link has a queue pair and nothing else.
struct network::pending_accept {
  std::weak_ptr<listener> from;
  std::shared_ptr<qp_link> link;
  open_request request;
  fabric::nonce nonce = fabric::fresh_nonce();
  std::optional<asio::steady_timer> deadline;
  bool finished = false;
};

class network::listener {
 public:
  listener(std::shared_ptr<cm_channel> events, rdma_cm_id* id, std::string key, accepting_check accepting,
           accept_hook on_accept)
      : events_(std::move(events)),
        id_(id),
        key_(std::move(key)),
        accepting_(std::move(accepting)),
        on_accept_(std::move(on_accept)) {}
  ~listener() {
    events_->forget(id_);
    ::rdma_destroy_id(id_);
  }
  bool accepting() const { return accepting_ && accepting_(); }
  bool accept(const opened_channel& c) const { return on_accept_ && on_accept_(c); }
  const std::string& key() const noexcept { return key_; }

 private:
  std::shared_ptr<cm_channel> events_;
  rdma_cm_id* id_;
  std::string key_;
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
                                                     std::uint64_t max_message_size, std::string_view key,
                                                     open_handler done) {
  auto p = std::make_shared<pending_open>();
  p->tiers = std::move(tiers);
  p->max_message_size = max_message_size;
  p->key = std::string(key);
  p->done = std::move(done);
  p->channel_id = next_channel_id();
  // A tier list too long for the connection's private data is found before anything is allocated.
  if (!handshake::encode(request_of(*p))) {
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
      p->link = std::make_shared<qp_link>(p->via, events_, p->id, p->channel_id, *inline_limit);
      p->link->take_memory(*control, *ring);
      p->via->add(p->link);
      if (::rdma_resolve_route(p->id, resolve_timeout_ms) != 0) return finish_open(p, errno_or(EHOSTUNREACH));
      return;
    }
    case RDMA_CM_EVENT_ROUTE_RESOLVED: {
      auto bytes = handshake::encode(request_of(*p));
      auto parameters = connection_parameters(bytes->data(), bytes->size());
      limit_silence(p->id, peer_timeout_);
      if (::rdma_connect(p->id, &parameters) != 0) return finish_open(p, errno_or(ECONNREFUSED));
      return;
    }
    case RDMA_CM_EVENT_ESTABLISHED: {
      auto acceptance = handshake::decode_acceptance(e.private_data);
      if (!acceptance) return finish_open(p, acceptance.failure());
      p->acceptance = *acceptance;
      return send_opener_grant(p);
    }
    case RDMA_CM_EVENT_REJECTED: return finish_open(p, handshake::decode_refusal(e.private_data));
    case RDMA_CM_EVENT_DISCONNECTED:
      // The acceptor's refusal, SENT before it disconnected, may wait in the completion queue.
      if (p->via) p->via->poll();
      if (p->finished) return;
      [[fallthrough]];
    default: {
      auto ec = to_error(e);
      return finish_open(p, ec ? ec : make_error_code(error::connection_reset));
    }
  }
}

open_request network::request_of(const pending_open& p) {
  return {p.channel_id, p.max_message_size, p.tiers, !p.key.empty(), p.nonce};
}

void network::send_opener_grant(const std::shared_ptr<pending_open>& p) {
  auto& link = *p->link;
  link.ready_to_send();
  link.listen_for_messages([this, weak = std::weak_ptr<pending_open>(p)](std::span<const std::byte> bytes) {
    if (auto self = weak.lock()) on_acceptor_grant(self, bytes);
  });
  auto control = link.grant(link.control());
  if (!control) return finish_open(p, control.failure());
  auto ring = link.grant(link.ring());
  if (!ring) return finish_open(p, ring.failure());
  link.take_memory(*control, *ring);
  memory_grant mine{{static_cast<std::uint32_t>(control->key), control->address},
                    {static_cast<std::uint32_t>(ring->key), ring->address}};
  if (!p->key.empty())
    mine.proof = fabric::prove(p->key, fabric::handshake_role::connecting, p->nonce, p->acceptance.nonce, p->channel_id,
                               p->acceptance.channel_id);
  const auto bytes = handshake::encode(mine, fabric::handshake_role::connecting);
  if (auto ec = link.send_message(bytes)) return finish_open(p, ec);
  wake_reactor();
}

void network::wake_reactor() const {
  // The answer comes as a completion: a reactor idle since before this device's completion
  // queue existed watches only older descriptors, and must look (and watch) again.
  const std::uint64_t one = 1;
  [[maybe_unused]] auto n = ::write(wake_fd_, &one, sizeof one);
}

void network::on_acceptor_grant(const std::shared_ptr<pending_open>& p, std::span<const std::byte> bytes) {
  if (p->finished) return;
  if (handshake::is_refusal(bytes)) return finish_open(p, handshake::decode_refusal(bytes));
  auto grant = handshake::decode_grant(bytes, fabric::handshake_role::accepting);
  if (!grant) return finish_open(p, grant.failure());
  if (!p->key.empty()) {
    const auto expected = fabric::prove(p->key, fabric::handshake_role::accepting, p->acceptance.nonce, p->nonce,
                                        p->acceptance.channel_id, p->channel_id);
    if (!fabric::same_proof(expected, grant->proof))
      return finish_open(p, make_error_code(error::authentication_failed));
  }
  const auto peer_id = p->acceptance.channel_id;
  p->link->established(peer_id, {grant->control.key, grant->control.address});
  auto setup = make_setup(*p->link, peer_id, grant->control, grant->ring);
  setup.tiers = p->tiers;
  setup.max_message_size = p->max_message_size;
  hand_over(p->link, p->id);
  finish_open(p, opened_channel{p->link, std::move(setup)});
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

proto::outcome<std::shared_ptr<network::listener>> network::listen(const sockaddr_storage& at, std::string_view key,
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
  auto l = std::make_shared<listener>(*channel, *id, std::string(key), std::move(accepting), std::move(on_accept));
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
  // Both hold a key, or neither: one side alone cannot set up anything with the other.
  if (request->demands_proof == l->key().empty()) return refuse(make_error_code(error::authentication_failed));
  auto t = transport_for(e.id->verbs);
  if (!t) return refuse(t.failure());
  auto inline_limit = (*t)->create_queue_pair(e.id);
  if (!inline_limit) return refuse(inline_limit.failure());
  auto p = std::make_shared<pending_accept>();
  p->from = l;
  p->request = std::move(*request);
  p->link = std::make_shared<qp_link>(*t, events_, e.id, next_channel_id(), *inline_limit);
  (*t)->add(p->link);
  const std::weak_ptr<pending_accept> weak = p;
  p->link->listen_for_messages([this, weak](std::span<const std::byte> bytes) {
    if (auto self = weak.lock()) on_opener_grant(self, bytes);
  });
  events_->watch(e.id, [this, p](const cm_event& event) { on_accept_event(p, event); });
  const auto acceptance = handshake::encode(open_acceptance{p->link->local_id(), p->nonce});
  auto parameters = connection_parameters(acceptance.data(), acceptance.size());
  limit_silence(e.id, peer_timeout_);
  if (::rdma_accept(e.id, &parameters) != 0) {
    reject(e.id, errno_or(ECONNABORTED));
    return finish_accept(*p);
  }
  // rdma_accept moved the queue pair to RTS: the opener's grant may come before ESTABLISHED.
  p->link->ready_to_send();
  wake_reactor();
  // An opener that never sends its grant must not hold the queue pair for ever.
  std::erase_if(pending_accepts_, [](const auto& w) { return w.expired(); });
  pending_accepts_.push_back(p);
  p->deadline.emplace(io_, peer_timeout_.count() > 0 ? peer_timeout_ : std::chrono::milliseconds(15000));
  p->deadline->async_wait([weak](std::error_code ec) {
    auto self = weak.lock();
    if (!ec && self) finish_accept(*self);
  });
}

void network::finish_accept(pending_accept& p) {
  if (std::exchange(p.finished, true)) return;
  p.deadline.reset();
  p.link->retire(p.link->local_id(), {p.link->control().handle, p.link->ring().handle});
}

void network::refuse_grant(pending_accept& p, std::error_code why) {
  p.link->send_message(handshake::encode_refusal(why));
  finish_accept(p);
}

void network::on_opener_grant(const std::shared_ptr<pending_accept>& p, std::span<const std::byte> bytes) {
  if (p->finished) return;
  auto grant = handshake::decode_grant(bytes, fabric::handshake_role::connecting);
  if (!grant) return refuse_grant(*p, grant.failure());
  auto l = p->from.lock();
  if (!l) return refuse_grant(*p, std::make_error_code(std::errc::connection_refused));
  const auto& q = p->request;
  auto& link = *p->link;
  if (!l->key().empty()) {
    const auto expected =
        fabric::prove(l->key(), fabric::handshake_role::connecting, q.nonce, p->nonce, q.channel_id, link.local_id());
    if (!fabric::same_proof(expected, grant->proof))
      return refuse_grant(*p, make_error_code(error::authentication_failed));
  }
  // Only now that the opener proved itself does this side register anything for it.
  auto& pool = link.transport_of().pool();
  auto control = pool.allocate(proto::control_block::size);
  if (!control) return refuse_grant(*p, control.failure());
  auto ring = pool.allocate(q.tiers[0].ring_bytes());
  if (!ring) {
    pool.release(control->handle);
    return refuse_grant(*p, ring.failure());
  }
  link.take_memory(*control, *ring);  // released with the link from here on
  auto granted_control = link.grant(*control);
  auto granted_ring = granted_control ? link.grant(*ring) : granted_control;
  if (!granted_ring) return refuse_grant(*p, granted_ring.failure());
  link.take_memory(*granted_control, *granted_ring);
  memory_grant mine{{static_cast<std::uint32_t>(granted_control->key), granted_control->address},
                    {static_cast<std::uint32_t>(granted_ring->key), granted_ring->address}};
  if (!l->key().empty())
    mine.proof =
        fabric::prove(l->key(), fabric::handshake_role::accepting, p->nonce, q.nonce, link.local_id(), q.channel_id);
  if (auto ec = link.send_message(handshake::encode(mine, fabric::handshake_role::accepting)))
    return refuse_grant(*p, ec);

  p->finished = true;
  p->deadline.reset();
  link.established(q.channel_id, {grant->control.key, grant->control.address});
  hand_over(p->link, link.cm_id());
  auto setup = make_setup(link, q.channel_id, grant->control, grant->ring);
  setup.tiers = q.tiers;
  setup.max_message_size = q.max_message_size;
  if (!l->accept(opened_channel{p->link, std::move(setup)}))
    p->link->retire(link.local_id(), {link.control().handle, link.ring().handle});
}

void network::on_accept_event(const std::shared_ptr<pending_accept>& p, const cm_event& e) {
  // ESTABLISHED says nothing new: the opener's grant, not the connection, completes the accept.
  if (e.type == RDMA_CM_EVENT_ESTABLISHED) return;
  // The opener gave up or vanished before its grant came.
  finish_accept(*p);
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
