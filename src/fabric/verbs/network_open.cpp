#include "fabric/verbs/network_parts.hpp"

#include "proto/wire.hpp"

#include <bellows/error.hpp>

namespace bellows::verbs {

using namespace network_parts;

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

}  // namespace bellows::verbs
