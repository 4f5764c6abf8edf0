// The channels a multiplexed link carries: their slots (control block and first ring), opening,
// accepting, refusing and detaching them through control messages, and failing them together.
#include "fabric/multiplexed_link.hpp"

#include "proto/tier_table.hpp"
#include "proto/wire.hpp"

#include <bellows/error.hpp>

#include <algorithm>

namespace bellows::fabric {

std::uint32_t multiplexed_link::allocate_id() {
  if (!free_ids_.empty()) {
    const std::uint32_t id = free_ids_.back();
    free_ids_.pop_back();
    slots_[id - 1] = channel_slot{};
    slots_[id - 1].in_use = true;
    return id;
  }
  slots_.emplace_back().in_use = true;
  return static_cast<std::uint32_t>(slots_.size());
}

proto::outcome<std::uint32_t> multiplexed_link::new_channel_slot(const tier& first) {
  auto control = register_region(proto::control_block::size);
  if (!control) return control.failure();
  auto ring = register_region(first.ring_bytes());
  if (!ring) {
    release_region(control->handle);
    return ring.failure();
  }
  const std::uint32_t id = allocate_id();
  slots_[id - 1].control = *control;
  slots_[id - 1].ring = *ring;
  return id;
}

multiplexed_link::channel_slot* multiplexed_link::slot(std::uint32_t id) {
  if (id == 0 || id > slots_.size() || !slots_[id - 1].in_use) return nullptr;
  return &slots_[id - 1];
}

void multiplexed_link::free_slot(std::uint32_t id) {
  channel_slot& s = slots_[id - 1];
  for (auto handle : s.graveyard) release_region(handle);
  s = channel_slot{};
  free_ids_.push_back(id);
}

bool multiplexed_link::unused() const noexcept {
  // A retired slot only waits for the peer's detach before its memory may be reused; dropping
  // the whole link (and its memory) makes that wait moot.
  return std::all_of(slots_.begin(), slots_.end(),
                     [](const channel_slot& s) { return !s.in_use || (s.retired && !s.opening); });
}

std::uint32_t multiplexed_link::open_channel(const std::vector<tier>& tiers, std::uint64_t max_message_size,
                                             open_handler done) {
  auto fail_now = [&](std::error_code ec) {
    done(ec);
    return std::uint32_t{0};
  };
  if (state_ == state::failed) return fail_now(why_failed_);
  if (tiers.empty() || tiers.size() > proto::max_tiers) return fail_now(make_error_code(error::invalid_argument));
  auto allocated = new_channel_slot(tiers[0]);
  if (!allocated) return fail_now(allocated.failure());
  const std::uint32_t id = *allocated;
  channel_slot& s = slots_[id - 1];
  s.opening = std::move(done);
  link_message m;
  m.kind = message_kind::open;
  m.first = id;
  m.control = s.control.address;
  m.ring = s.ring.address;
  m.value = max_message_size;
  m.tier_count = static_cast<std::uint32_t>(tiers.size());
  std::copy(tiers.begin(), tiers.end(), m.tiers);
  send(m);
  return id;
}

void multiplexed_link::cancel_open(std::uint32_t local_id) {
  channel_slot* s = slot(local_id);
  if (s == nullptr || !s->opening) return;
  s->opening.reset();
  // The peer may not have read the open yet (nobody accepts there): it then refuses it without
  // handing it to an accept. If it did, its `accepted` comes back and we detach (on_accepted).
  link_message m;
  m.kind = message_kind::withdraw;
  m.first = local_id;
  send(m);
}

void multiplexed_link::refuse_withdrawn(const link_message& open) {
  link_message answer;
  answer.kind = message_kind::refused;
  answer.first = open.first;
  answer.value = static_cast<std::uint64_t>(ECANCELED);
  send(answer);
}

channel_setup multiplexed_link::setup_for(std::uint32_t id, std::uint32_t peer_id, const link_message& m) const {
  const channel_slot& s = slots_[id - 1];
  channel_setup setup;
  setup.local_id = id;
  setup.peer_id = peer_id;
  setup.control = s.control;
  setup.ring = s.ring;
  setup.peer_control = {peer_key_, m.control};
  setup.peer_ring = {peer_key_, m.ring};
  setup.peer_window_key = peer_key_;
  setup.peer_window_begin = peer_window_begin_;
  setup.peer_window_end = peer_window_end_;
  return setup;
}

void multiplexed_link::on_open(const link_message& m) {
  link_message answer;
  answer.first = m.first;
  auto refuse = [&](std::error_code ec) {
    answer.kind = message_kind::refused;
    answer.value = static_cast<std::uint64_t>(ec.value());
    answer.second = ec.category() == bellows::error_category() ? refusal_in_bellows_category : 0;
    send(answer);
  };
  std::vector<tier> tiers(m.tiers, m.tiers + std::min<std::size_t>(m.tier_count, proto::max_tiers));
  if (m.tier_count > proto::max_tiers || !proto::tier_table::make(tiers))
    return refuse(make_error_code(error::invalid_argument));
  auto allocated = new_channel_slot(tiers[0]);
  if (!allocated) return refuse(allocated.failure());
  const std::uint32_t id = *allocated;
  const region control = slots_[id - 1].control;
  const region ring = slots_[id - 1].ring;
  channel_setup setup = setup_for(id, m.first, m);
  setup.tiers = std::move(tiers);
  setup.max_message_size = m.value;
  if (!on_accept_ || !on_accept_(*this, setup)) {
    slots_[id - 1].graveyard = std::vector<std::uint64_t>{control.handle, ring.handle};
    free_slot(id);
    return refuse(std::make_error_code(std::errc::connection_refused));
  }
  answer.kind = message_kind::accepted;
  answer.second = id;
  answer.control = control.address;
  answer.ring = ring.address;
  send(answer);
}

void multiplexed_link::on_accepted(const link_message& m) {
  channel_slot* s = slot(m.first);
  if (s == nullptr || s->endpoint != nullptr || s->retired || m.second == 0)
    return fail(make_error_code(error::protocol_violation));
  if (!s->opening) {
    // Cancelled while the peer was accepting: undo it on both sides.
    send_detach(m.second);
    s->graveyard = {s->control.handle, s->ring.handle};
    s->retired = true;
    return;
  }
  auto done = std::move(*s->opening);
  s->opening.reset();
  auto setup = setup_for(m.first, m.second, m);
  done(std::move(setup));
}

void multiplexed_link::on_refused(const link_message& m) {
  channel_slot* s = slot(m.first);
  if (s == nullptr || s->endpoint != nullptr || s->retired) return fail(make_error_code(error::protocol_violation));
  auto done = std::move(s->opening);
  s->graveyard = {s->control.handle, s->ring.handle};
  free_slot(m.first);
  const int value = static_cast<int>(m.value);
  std::error_code why = std::make_error_code(std::errc::connection_refused);
  if (value != 0 && m.value <= INT32_MAX)
    why = {value, m.second == refusal_in_bellows_category ? bellows::error_category() : std::system_category()};
  if (done) (*done)(why);
}

void multiplexed_link::on_detach(const link_message& m) {
  channel_slot* s = slot(m.first);
  if (s == nullptr || s->peer_detached) return;  // already gone here, or said twice: nothing to do
  s->peer_detached = true;
  if (s->retired) return free_slot(m.first);
  if (s->endpoint != nullptr) s->endpoint->on_peer_detached();
}

void multiplexed_link::attach(std::uint32_t local_id, channel_endpoint* endpoint) {
  if (channel_slot* s = slot(local_id)) s->endpoint = endpoint;
}

void multiplexed_link::send_detach(std::uint32_t peer_id) {
  link_message m;
  m.kind = message_kind::detach;
  m.first = peer_id;
  send(m);
}

void multiplexed_link::retire(std::uint32_t local_id, std::vector<std::uint64_t> regions) {
  channel_slot* s = slot(local_id);
  if (s == nullptr) {
    for (auto handle : regions) release_region(handle);
    return;
  }
  s->endpoint = nullptr;
  s->retired = true;
  s->graveyard = std::move(regions);
  if (s->peer_detached || state_ == state::failed) free_slot(local_id);
}

void multiplexed_link::set_hooks(accept_hook on_accept, failure_hook on_failure) {
  on_accept_ = std::move(on_accept);
  on_failure_ = std::move(on_failure);
}

void multiplexed_link::serve_accepts(fabric::accept_hook on_accept) {
  set_hooks(
      [hook = std::move(on_accept)](multiplexed_link& at, const channel_setup& setup) {
        return hook(opened_channel{at.shared_from_this(), setup});
      },
      nullptr);
}

namespace {

/// An open waiting for the peer's answer over the link.
class multiplexed_open final : public pending_open {
 public:
  multiplexed_open(std::weak_ptr<multiplexed_link> l, std::uint32_t id) : link_(std::move(l)), id_(id) {}
  void cancel() override {
    if (auto l = link_.lock()) l->cancel_open(id_);
  }

 private:
  // Weak: a link that no channel uses is dropped by the reactor, and must not live on here.
  std::weak_ptr<multiplexed_link> link_;
  std::uint32_t id_;
};

}  // namespace

std::shared_ptr<pending_open> multiplexed_link::open_over(const std::shared_ptr<multiplexed_link>& l,
                                                          const std::vector<tier>& tiers,
                                                          std::uint64_t max_message_size, fabric::open_handler done) {
  const auto id = l->open_channel(tiers, max_message_size, [carrier = l, done](proto::outcome<channel_setup> setup) {
    if (!setup) return done(setup.failure());
    done(opened_channel{carrier, std::move(*setup)});
  });
  if (id == 0) return nullptr;
  return std::make_shared<multiplexed_open>(l, id);
}

channel_endpoint* multiplexed_link::endpoint_of(std::uint32_t id) {
  channel_slot* s = slot(id);
  return s == nullptr ? nullptr : s->endpoint;
}

void multiplexed_link::send(const link_message& m) {
  if (state_ == state::failed) return;
  if (state_ == state::handshaking && m.kind != message_kind::hello) {
    waiting_for_handshake_.push_back(m);
    return;
  }
  transmit(m);
}

void multiplexed_link::become_ready() {
  state_ = state::ready;
  while (!waiting_for_handshake_.empty() && state_ == state::ready) {
    const link_message m = waiting_for_handshake_.front();
    waiting_for_handshake_.pop_front();
    transmit(m);
  }
}

void multiplexed_link::handle_batch(std::vector<link_message>& batch) {
  for (std::size_t i = 0; i < batch.size(); ++i) {
    const link_message& w = batch[i];
    if (w.kind != message_kind::withdraw) continue;
    for (std::size_t j = 0; j < i; ++j) {
      link_message& o = batch[j];
      if (o.kind != message_kind::open || o.first != w.first) continue;
      refuse_withdrawn(o);
      o.kind = message_kind::withdraw;  // handled: nothing more to do for either
      break;
    }
  }
  for (const auto& m : batch) {
    if (state_ == state::failed) return;
    handle(m);
  }
}

void multiplexed_link::handle(const link_message& m) {
  const bool handshake_message = m.kind == message_kind::hello || m.kind == message_kind::key_proof;
  if ((state_ == state::handshaking) != handshake_message) return fail(make_error_code(error::protocol_violation));
  switch (m.kind) {
    case message_kind::hello: return on_hello(m);
    case message_kind::key_proof: return on_proof(m);
    case message_kind::open: return on_open(m);
    case message_kind::accepted: return on_accepted(m);
    case message_kind::refused: return on_refused(m);
    case message_kind::detach: return on_detach(m);
    // Its open was read before (and answered) or refused unseen in the same batch.
    case message_kind::withdraw: return;
  }
  fail(make_error_code(error::protocol_violation));
}

void multiplexed_link::fail_channels(std::error_code ec) {
  if (state_ == state::failed) return;
  state_ = state::failed;
  why_failed_ = ec;
  waiting_for_handshake_.clear();
  auto self = shared_from_this();  // hooks may drop the last other reference
  for (std::uint32_t id = 1; id <= slots_.size(); ++id) {
    channel_slot& s = slots_[id - 1];
    if (!s.in_use) continue;
    if (s.opening) {
      auto done = std::move(*s.opening);
      s.opening.reset();
      s.graveyard = {s.control.handle, s.ring.handle};
      free_slot(id);
      done(ec);
    } else if (s.retired) {
      free_slot(id);
    } else if (s.endpoint != nullptr) {
      s.endpoint->on_link_failed(ec);
    }
  }
  if (on_failure_) on_failure_(*this, ec);
}

}  // namespace bellows::fabric
