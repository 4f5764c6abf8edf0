#include "fabric/verbs/network_parts.hpp"

#include "proto/wire.hpp"

#include <bellows/error.hpp>

namespace bellows::verbs {

using namespace network_parts;

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

}  // namespace bellows::verbs
