#include "sim/sim_link.hpp"

#include "proto/wire.hpp"

#include <bellows/error.hpp>

#include <asio/post.hpp>

#include <unistd.h>
#include <algorithm>

namespace bellows::sim {

sim_link::sim_link(asio::io_context& io, int wake_fd, std::uint64_t arena_key, std::size_t budget)
    : io_(io), wake_fd_(wake_fd), provider_(arena_key, budget) {}

std::pair<std::shared_ptr<sim_link>, std::shared_ptr<sim_link>> sim_link::make_pair(asio::io_context& io_a,
                                                                                    int wake_fd_a, std::size_t budget_a,
                                                                                    asio::io_context& io_b,
                                                                                    int wake_fd_b,
                                                                                    std::size_t budget_b) {
  std::shared_ptr<sim_link> a(new sim_link(io_a, wake_fd_a, 1, budget_a));
  std::shared_ptr<sim_link> b(new sim_link(io_b, wake_fd_b, 2, budget_b));
  a->peer_ = b;
  b->peer_ = a;
  // Each provider writes into the other's memory; the write hook decides how much lands now.
  a->provider_.connect(
      &b->provider_, [raw = a.get()](std::size_t) { return raw->place_now_; }, nullptr);
  b->provider_.connect(
      &a->provider_, [raw = b.get()](std::size_t) { return raw->place_now_; }, nullptr);
  return {a, b};
}

std::pair<fabric::channel_setup, fabric::channel_setup> sim_link::open_channel(sim_link& a, sim_link& b,
                                                                               const std::vector<tier>& tiers,
                                                                               std::uint64_t max_message_size) {
  auto carve = [&](sim_link& side) {
    side.slots_.emplace_back();
    channel_slot& s = side.slots_.back();
    s.in_use = true;
    s.control = *side.provider_.register_region(proto::control_block::size);
    const auto ring = *side.provider_.register_region(tiers.at(0).ring_bytes());
    return std::pair{static_cast<std::uint32_t>(side.slots_.size()), ring};
  };
  const auto [id_a, ring_a] = carve(a);
  const auto [id_b, ring_b] = carve(b);
  auto setup_for = [&](sim_link& self, std::uint32_t self_id, const fabric::region& ring, sim_link& peer,
                       std::uint32_t peer_id, const fabric::region& peer_ring) {
    fabric::channel_setup s;
    s.local_id = self_id;
    s.peer_id = peer_id;
    s.control = self.slots_[self_id - 1].control;
    s.ring = ring;
    s.peer_control = {peer.provider_.arena_key(), peer.slots_[peer_id - 1].control.address};
    s.peer_ring = {peer_ring.key, peer_ring.address};
    s.peer_window_key = peer.provider_.arena_key();
    s.peer_window_begin = 0;
    s.peer_window_end = sim_provider::arena_size;
    s.tiers = tiers;
    s.max_message_size = max_message_size;
    return s;
  };
  return {setup_for(a, id_a, ring_a, b, id_b, ring_b), setup_for(b, id_b, ring_b, a, id_a, ring_a)};
}

sim_link::channel_slot* sim_link::slot(std::uint32_t id) {
  if (id == 0 || id > slots_.size() || !slots_[id - 1].in_use) return nullptr;
  return &slots_[id - 1];
}

void sim_link::free_slot(std::uint32_t id) {
  channel_slot& s = slots_[id - 1];
  for (auto handle : s.graveyard) provider_.release_region(handle);
  s = channel_slot{};
}

bool sim_link::unused() const noexcept {
  return std::all_of(slots_.begin(), slots_.end(), [](const channel_slot& s) { return !s.in_use || s.retired; });
}

void sim_link::attach(std::uint32_t local_id, fabric::channel_endpoint* endpoint) {
  if (channel_slot* s = slot(local_id)) s->endpoint = endpoint;
}

void sim_link::send_detach(std::uint32_t peer_id) {
  // Like a message on the shm socket: it arrives after every write issued before it.
  if (auto peer = peer_.lock(); peer && !failed_) asio::post(peer->io_, [peer, peer_id] { peer->on_detach(peer_id); });
}

void sim_link::on_detach(std::uint32_t id) {
  channel_slot* s = slot(id);
  if (s == nullptr || s->peer_detached) return;
  s->peer_detached = true;
  if (s->retired) return free_slot(id);
  if (s->endpoint != nullptr) s->endpoint->on_peer_detached();
}

void sim_link::retire(std::uint32_t local_id, std::vector<std::uint64_t> regions) {
  channel_slot* s = slot(local_id);
  if (s == nullptr) {
    for (auto handle : regions) provider_.release_region(handle);
    return;
  }
  s->endpoint = nullptr;
  s->retired = true;
  s->graveyard = std::move(regions);
  if (s->peer_detached || failed_) free_slot(local_id);
}

void sim_link::kill() {
  killed_ = true;  // a dead process writes nothing more, whatever its code still tries
  provider_.drop_held_writes();
  held_doorbells_.clear();
  auto fail_later = [](const std::shared_ptr<sim_link>& end) {
    asio::post(end->io_, [end] { end->fail(make_error_code(error::connection_reset)); });
    // Wake a sleeping reactor so that it sees the failure now, as a socket's EOF would.
    end->wake();
  };
  fail_later(shared_from_this());
  if (auto peer = peer_.lock()) fail_later(peer);
}

void sim_link::fail(std::error_code ec) {
  if (failed_) return;
  failed_ = true;
  auto self = shared_from_this();  // endpoints may drop the last other reference
  for (std::uint32_t id = 1; id <= slots_.size(); ++id) {
    channel_slot& s = slots_[id - 1];
    if (!s.in_use) continue;
    if (s.retired) {
      free_slot(id);
    } else if (s.endpoint != nullptr) {
      s.endpoint->on_link_failed(ec);
    }
  }
}

proto::outcome<fabric::region> sim_link::register_region(std::size_t length) {
  return provider_.register_region(length);
}

sim::link_write sim_link::classify(fabric::remote_address dst, std::size_t length) const {
  link_write w{0, write_target::ring, dst, length};
  auto peer = peer_.lock();
  if (!peer) return w;
  for (std::uint32_t id = 1; id <= peer->slots_.size(); ++id) {
    const auto& control = peer->slots_[id - 1].control;
    if (dst.key != control.key || dst.address < control.address || dst.address >= control.address + control.length)
      continue;
    w.peer_channel = id;
    const auto offset = dst.address - control.address;
    w.target = offset == proto::control_block::credit_offset  ? write_target::credit
               : offset == proto::control_block::flags_offset ? write_target::flags
                                                              : write_target::ack;
    break;
  }
  return w;
}

std::error_code sim_link::write(fabric::remote_address dst, fabric::byte_pieces pieces) {
  if (failed_ || killed_) return make_error_code(error::connection_reset);
  std::size_t length = 0;
  for (auto p : pieces) length += p.size();
  place_now_ = write_hook_ ? write_hook_(classify(dst, length)) : SIZE_MAX;
  auto ec = provider_.write(dst, pieces);
  place_now_ = SIZE_MAX;
  return ec;
}

void sim_link::ring_doorbell(std::uint32_t peer_channel) {
  if (failed_ || killed_) return;
  if (holding_doorbells_) return held_doorbells_.push_back(peer_channel);
  deliver_doorbell(peer_channel);
}

void sim_link::send_gathered() {
  if (std::exchange(fail_in_send_gathered_, false)) fail(make_error_code(error::connection_reset));
}

void sim_link::release_doorbells() {
  auto held = std::exchange(held_doorbells_, {});
  for (auto id : held) deliver_doorbell(id);
}

void sim_link::deliver_doorbell(std::uint32_t channel) {
  auto peer = peer_.lock();
  if (!peer || peer->failed_) return;
  peer->doorbells_.push_back(channel);
  if (peer->sleeping_) {
    peer->sleeping_ = false;
    peer->wake();
  }
}

void sim_link::wake() {
  const std::uint64_t one = 1;
  if (wake_fd_ >= 0) [[maybe_unused]]
    const auto n = ::write(wake_fd_, &one, sizeof one);
}

std::size_t sim_link::poll() {
  if (failed_ || doorbells_.empty()) return 0;
  auto rung = std::exchange(doorbells_, {});
  for (auto id : rung)
    if (channel_slot* s = slot(id); s != nullptr && s->endpoint != nullptr) s->endpoint->on_doorbell();
  return rung.size();
}

bool sim_link::prepare_to_sleep() {
  if (!doorbells_.empty()) return false;
  sleeping_ = true;
  return true;
}

}  // namespace bellows::sim
