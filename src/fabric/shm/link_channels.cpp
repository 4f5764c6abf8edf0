// The channels a shm link carries: their slots (control block and first ring carved from the
// arena), opening, accepting, refusing and detaching them over the link's socket.
#include "fabric/shm/link.hpp"

#include "proto/tier_table.hpp"
#include "proto/wire.hpp"

#include <bellows/error.hpp>

#include <algorithm>

namespace bellows::shm {

std::uint32_t link::allocate_id() {
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

proto::outcome<std::uint32_t> link::new_channel_slot(const tier& first) {
  auto control = arena_.allocate(proto::control_block::size);
  if (!control) return control.failure();
  auto ring = arena_.allocate(first.ring_bytes());
  if (!ring) {
    arena_.release(control->handle);
    return ring.failure();
  }
  const std::uint32_t id = allocate_id();
  slots_[id - 1].control = *control;
  slots_[id - 1].ring = *ring;
  return id;
}

link::channel_slot* link::slot(std::uint32_t id) {
  if (id == 0 || id > slots_.size() || !slots_[id - 1].in_use) return nullptr;
  return &slots_[id - 1];
}

void link::free_slot(std::uint32_t id) {
  channel_slot& s = slots_[id - 1];
  for (auto handle : s.graveyard) arena_.release(handle);
  s = channel_slot{};
  free_ids_.push_back(id);
}

bool link::unused() const noexcept {
  // A retired slot only waits for the peer's detach before its memory may be reused; dropping
  // the whole link (and its arena) makes that wait moot.
  return std::all_of(slots_.begin(), slots_.end(),
                     [](const channel_slot& s) { return !s.in_use || (s.retired && !s.opening); });
}

std::uint32_t link::open_channel(const std::vector<tier>& tiers, std::uint64_t max_message_size, open_handler done) {
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

void link::cancel_open(std::uint32_t local_id) {
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

void link::refuse_withdrawn(const link_message& open) {
  link_message answer;
  answer.kind = message_kind::refused;
  answer.first = open.first;
  answer.value = static_cast<std::uint64_t>(ECANCELED);
  send(answer);
}

fabric::channel_setup link::setup_for(std::uint32_t id, std::uint32_t peer_id, const link_message& m) const {
  const channel_slot& s = slots_[id - 1];
  fabric::channel_setup setup;
  setup.local_id = id;
  setup.peer_id = peer_id;
  setup.control = s.control;
  setup.ring = s.ring;
  setup.peer_control = {peer_key_, m.control};
  setup.peer_ring = {peer_key_, m.ring};
  setup.peer_window_key = peer_key_;
  setup.peer_window_begin = arena::header_bytes;
  setup.peer_window_end = peer_.size();
  return setup;
}

void link::on_open(const link_message& m) {
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
  const fabric::region control = slots_[id - 1].control;
  const fabric::region ring = slots_[id - 1].ring;
  fabric::channel_setup setup = setup_for(id, m.first, m);
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

void link::on_accepted(const link_message& m) {
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

void link::on_refused(const link_message& m) {
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

void link::on_detach(const link_message& m) {
  channel_slot* s = slot(m.first);
  if (s == nullptr || s->peer_detached) return;  // already gone here, or said twice: nothing to do
  s->peer_detached = true;
  if (s->retired) return free_slot(m.first);
  if (s->endpoint != nullptr) s->endpoint->on_peer_detached();
}

void link::attach(std::uint32_t local_id, fabric::channel_endpoint* endpoint) {
  if (channel_slot* s = slot(local_id)) s->endpoint = endpoint;
}

void link::send_detach(std::uint32_t peer_id) {
  link_message m;
  m.kind = message_kind::detach;
  m.first = peer_id;
  send(m);
}

void link::retire(std::uint32_t local_id, std::vector<std::uint64_t> regions) {
  channel_slot* s = slot(local_id);
  if (s == nullptr) {
    for (auto handle : regions) arena_.release(handle);
    return;
  }
  s->endpoint = nullptr;
  s->retired = true;
  s->graveyard = std::move(regions);
  if (s->peer_detached || state_ == state::failed) free_slot(local_id);
}

}  // namespace bellows::shm
