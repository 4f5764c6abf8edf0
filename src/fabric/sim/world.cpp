#include "fabric/sim/world.hpp"

#include "proto/shared_access.hpp"

#include <algorithm>
#include <cstring>
#include <deque>

namespace bellows::sim {
namespace {

// Arena keys differ per side so a write aimed at the wrong endpoint is caught.
constexpr std::uint64_t arena_key_of(side s) { return 0xa4e0a000 + static_cast<std::uint64_t>(s); }

std::uint64_t checksum(std::span<const std::byte> bytes) {
  std::uint64_t h = 1469598103934665603ull;
  for (std::byte b : bytes) h = (h ^ static_cast<std::uint8_t>(b)) * 1099511628211ull;
  return h;
}

}  // namespace

const char* to_string(death_point p) {
  switch (p) {
    case death_point::before_enlarge_request: return "before ENLARGE_REQ";
    case death_point::after_enlarge_request: return "after ENLARGE_REQ";
    case death_point::after_provision: return "after provisioning";
    case death_point::between_ack_head_and_tail: return "between ack head and tail";
    case death_point::mid_fragment: return "mid-fragment";
    case death_point::during_shrink: return "during SHRINK_REQ";
    case death_point::during_close: return "during CLOSE";
  }
  return "?";
}

struct world::endpoint {
  struct outgoing {
    std::shared_ptr<const std::vector<std::byte>> bytes;
    std::vector<std::span<const std::byte>> parts;
    std::size_t pieces;
  };

  endpoint(side s, std::size_t budget) : self(s), provider(arena_key_of(s), budget) {}

  side self;
  sim_provider provider;
  fabric::region control;
  fabric::remote_address peer_control;
  std::optional<proto::sender> tx;
  std::optional<proto::receiver> rx;
  std::map<std::uint64_t, outgoing> sends;
  std::uint64_t next_send_id = 1;
  /// What the peer sent successfully and this side has not received yet, in order.
  std::deque<std::shared_ptr<const std::vector<std::byte>>> expected;
  std::vector<std::byte> assembling;
  std::size_t frames_held = 0;
  std::optional<clock_time> timer_at;
  bool doorbell_after_flush = false;
  endpoint_report report;
};

world::world(world_options options) : options_(std::move(options)), rng_(options_.seed) {
  auto table = proto::tier_table::make(options_.tiers);
  if (!table) throw std::system_error(table.failure(), "sim::world tier table");
  proto::direction_options dir{*table, options_.ack_timeout, options_.idle_shrink_after, options_.retry_after_denial,
                               std::uint64_t{1} << 40};
  for (side s : {side::a, side::b})
    endpoints_[static_cast<int>(s)] = std::make_unique<endpoint>(s, options_.faults.budget_bytes);

  // Connection setup: each side registers its control block and first ring and tells the peer.
  fabric::region first_ring[2];
  for (side s : {side::a, side::b}) {
    endpoint& e = ep(s);
    auto control = e.provider.register_region(proto::control_block::size);
    auto ring = e.provider.register_region((*table)[0].ring_bytes());
    if (!control || !ring) throw std::system_error(make_error_code(error::budget_exhausted), "sim::world setup");
    e.control = *control;
    first_ring[static_cast<int>(s)] = *ring;
  }
  for (side s : {side::a, side::b}) {
    endpoint& e = ep(s);
    endpoint& peer = ep(other(s));
    const fabric::region& mine = first_ring[static_cast<int>(s)];
    const fabric::region& theirs = first_ring[static_cast<int>(other(s))];
    e.peer_control = {peer.control.key, peer.control.address};
    e.rx.emplace(dir, proto::local_ring{mine.handle, mine.key, mine.address, mine.data, 0, 0});
    e.tx.emplace(dir, proto::remote_ring{theirs.key, theirs.address, 0, 0},
                 proto::remote_window{peer.provider.arena_key(), 0, sim_provider::arena_size}, now_);
    e.provider.connect(
        &peer.provider,
        [this, s](std::size_t length) -> std::size_t {
          // Whole aligned words only: a flag is placed entirely or not at all, and a frame's
          // 16-byte header is placed as a unit, as on an RDMA NIC.
          if (length < 24 || !chance(options_.faults.torn_write_rate)) return length;
          const std::size_t words = (length - 16) / 8;
          const std::size_t cut = 16 + 8 * std::uniform_int_distribution<std::size_t>(0, words - 1)(rng_);
          schedule(random_delay(options_.faults.torn_write_delay) + 1ns, [this, s] {
            if (ep(s).report.dead) return;
            ep(s).provider.flush();
            if (std::exchange(ep(s).doorbell_after_flush, false)) ring_peer(s);
          });
          // A spinning peer looks at the half-placed write before the rest arrives.
          schedule(0ns, [this, s] { activate(other(s)); });
          return cut;
        },
        [](std::uint32_t) {});
  }
}

world::~world() = default;

const proto::tier_table& world::tiers() const noexcept { return ep(side::a).tx->options().tiers; }

void world::schedule(std::chrono::nanoseconds delay, std::function<void()> run) {
  events_.push(event{now_ + delay, order_++, std::move(run)});
}

std::chrono::nanoseconds world::random_delay(std::chrono::nanoseconds max) {
  if (max.count() <= 0) return 0ns;
  return std::chrono::nanoseconds(std::uniform_int_distribution<std::int64_t>(0, max.count())(rng_));
}

bool world::chance(double p) { return p > 0 && std::uniform_real_distribution<double>(0, 1)(rng_) < p; }

void world::emit(trace_event::what kind, side where, std::uint32_t from, std::uint32_t to, std::uint64_t bytes) {
  trace_.push_back({kind, now_, where, from, to, bytes});
  if (on_trace) on_trace(trace_.back());
}

std::uint64_t world::send(side from, std::vector<std::byte> message, std::size_t pieces) {
  endpoint& e = ep(from);
  const std::uint64_t id = e.next_send_id++;
  auto& out = e.sends[id];
  out.bytes = std::make_shared<const std::vector<std::byte>>(std::move(message));
  out.pieces = std::max<std::size_t>(pieces, 1);
  // A gather list of roughly equal pieces, so fragments straddle piece boundaries.
  const std::span<const std::byte> all(*out.bytes);
  const std::size_t step = (all.size() + out.pieces - 1) / out.pieces;
  for (std::size_t at = 0; at < all.size(); at += step)
    out.parts.push_back(all.subspan(at, std::min(step, all.size() - at)));
  proto::sender_events ev;
  e.tx->submit(id, {out.parts, all.size()}, now_, ev);
  execute(from, ev);
  schedule(0ns, [this, from] { activate(from); });
  return id;
}

void world::close(side s) {
  proto::sender_events ev;
  ep(s).tx->close(now_, ev);
  execute(s, ev);
  schedule(0ns, [this, s] { activate(s); });
}

void world::set_pressure(side s, bool on) {
  proto::receiver_events ev;
  ep(s).rx->set_pressure(on, ev);
  execute(s, ev);
}

void world::set_budget(side s, std::size_t bytes) { ep(s).provider.set_budget(bytes); }

void world::kill(side s) {
  endpoint& e = ep(s);
  if (e.report.dead) return;
  e.report.dead = true;
  e.provider.drop_held_writes();
  emit(trace_event::what::peer_died, s, 0, 0, 0);
  schedule(options_.death_detection, [this, s] { fail_endpoint(other(s), make_error_code(error::connection_reset)); });
}

bool world::dies_at(side s, death_point p) {
  if (!options_.death || options_.death->first != s || options_.death->second != p) return false;
  options_.death.reset();
  return true;
}

void world::fail_endpoint(side s, std::error_code ec) {
  endpoint& e = ep(s);
  if (e.report.dead || e.report.failure) return;
  e.report.failure = ec;
  emit(trace_event::what::failed, s, 0, 0, 0);
  proto::sender_events tx_ev;
  e.tx->fail(ec, tx_ev);
  execute(s, tx_ev);
  proto::receiver_events rx_ev;
  e.rx->fail(ec, rx_ev);
  execute(s, rx_ev);
  finish_receive(s);
  // The failing side tears the channel down; its peer sees the connection go.
  schedule(options_.death_detection, [this, s] { fail_endpoint(other(s), make_error_code(error::connection_reset)); });
}

void world::activate(side s) {
  endpoint& e = ep(s);
  if (e.report.dead) return;
  proto::sender_events tx_ev;
  e.tx->step(e.control.data, now_, tx_ev);
  execute(s, tx_ev);
  if (e.report.dead) return;
  proto::receiver_events rx_ev;
  e.rx->poll(rx_ev);
  execute(s, rx_ev);
  arm_timer(s);
}

void world::arm_timer(side s) {
  endpoint& e = ep(s);
  const auto deadline = e.tx->next_deadline();
  if (!deadline || deadline == e.timer_at) return;
  e.timer_at = deadline;
  schedule(std::max(*deadline - now_, std::chrono::nanoseconds{0}), [this, s] {
    ep(s).timer_at.reset();
    activate(s);
  });
}

void world::ring_peer(side s) {
  endpoint& e = ep(s);
  if (e.provider.holding_writes()) {
    // A doorbell travels behind the writes it announces (RDMA WRITE WITH IMMEDIATE semantics).
    e.doorbell_after_flush = true;
    return;
  }
  auto delay = options_.link_latency;
  if (chance(options_.faults.doorbell_delay_rate)) delay += random_delay(options_.faults.doorbell_delay);
  schedule(delay, [this, s] { activate(other(s)); });
}

void world::execute(side s, proto::sender_events& ev) {
  endpoint& e = ep(s);
  for (const proto::frame_write& w : ev.writes) {
    if (e.report.dead) return;
    const auto kind = w.header.kind;
    if (kind == proto::frame_kind::enlarge_req && dies_at(s, death_point::before_enlarge_request)) return kill(s);
    const auto header = proto::encode_header(w.header);
    std::vector<std::span<const std::byte>> pieces{header};
    if (w.inline_length != 0) pieces.emplace_back(w.inline_payload.data(), w.inline_length);
    proto::for_each_piece(w.source, w.source_offset, w.source_length, [&](auto p) { pieces.push_back(p); });
    const auto trailer = proto::encode_trailer(w.header.seq);
    const std::span<const std::byte> trailer_piece[] = {trailer};
    std::error_code ec = e.provider.write({w.ring.key, w.ring.address + w.offset}, pieces);
    if (!ec) ec = e.provider.write({w.ring.key, w.ring.address + w.trailer_at()}, trailer_piece);
    if (ec) return fail_endpoint(s, ec);
    if ((kind == proto::frame_kind::enlarge_req && dies_at(s, death_point::after_enlarge_request)) ||
        (kind == proto::frame_kind::frag_more && dies_at(s, death_point::mid_fragment)) ||
        (kind == proto::frame_kind::shrink_req && dies_at(s, death_point::during_shrink)))
      return kill(s);
  }
  for (const auto& c : ev.completions) on_send_done(s, c);
  for (const auto& r : ev.retiers) {
    using what = proto::retier_event::what;
    const auto kind = r.kind == what::requested
                          ? (r.shrink ? trace_event::what::shrink_requested : trace_event::what::enlarge_requested)
                      : r.kind == what::granted ? trace_event::what::acked_granted
                      : r.kind == what::denied  ? trace_event::what::acked_denied
                                                : trace_event::what::ack_timed_out;
    emit(kind, s, r.from_tier, r.to_tier, r.trigger_length);
  }
  if (ev.ring_doorbell) ring_peer(s);
  if (ev.closed) {
    e.report.close_result = *ev.closed;
    emit(trace_event::what::closed, s, 0, 0, 0);
  }
  if (ev.failure) fail_endpoint(s, *ev.failure);
}

void world::execute(side s, proto::receiver_events& ev) {
  endpoint& e = ep(s);
  for (const auto& f : ev.frames) deliver(s, f);
  if (ev.provision) {
    const auto request = *ev.provision;
    const auto& f = options_.faults;
    const auto spread = std::max(f.provision_delay_max - f.provision_delay_min, std::chrono::nanoseconds{0});
    schedule(f.provision_delay_min + random_delay(spread), [this, s, request] { provision(s, request); });
  }
  if (ev.credit_word) {
    if (e.rx->peer_closed() && dies_at(s, death_point::during_close)) return kill(s);
    std::byte word[8];
    proto::put(word, *ev.credit_word);
    write_control(s, proto::control_block::credit_offset, word);
  }
  if (ev.flags_word) {
    std::byte word[8];
    proto::put(word, *ev.flags_word);
    write_control(s, proto::control_block::flags_offset, word);
  }
  if (ev.ack) {
    const auto bytes = proto::encode_ack(*ev.ack);
    if (dies_at(s, death_point::between_ack_head_and_tail)) {
      write_control(s, proto::control_block::ack_offset, std::span(bytes).first(8));
      return kill(s);
    }
    write_control(s, proto::control_block::ack_offset, bytes);
    emit(
        ev.ack->status == proto::ack_status::granted ? trace_event::what::provisioned : trace_event::what::acked_denied,
        s, e.rx->tier(), ev.ack->tier, 0);
  }
  for (auto region : ev.released_regions) {
    emit(trace_event::what::ring_released, s, 0, 0, 0);
    e.provider.release_region(region);
  }
  if (ev.ring_doorbell) ring_peer(s);
  if (ev.peer_closed) finish_receive(s);
  if (ev.failure) fail_endpoint(s, *ev.failure);
}

void world::write_control(side s, std::size_t offset, std::span<const std::byte> bytes) {
  endpoint& e = ep(s);
  const std::span<const std::byte> pieces[] = {bytes};
  if (auto ec = e.provider.write({e.peer_control.key, e.peer_control.address + offset}, pieces)) fail_endpoint(s, ec);
}

void world::provision(side s, proto::provision_request request) {
  endpoint& e = ep(s);
  if (e.report.dead) return;
  const auto& g = tiers()[request.tier];
  auto region = e.provider.register_region(g.ring_bytes());
  std::optional<proto::local_ring> ring;
  if (region) {
    if (dies_at(s, death_point::after_provision)) return kill(s);
    ring = proto::local_ring{region->handle, region->key, region->address, region->data, request.tier, 0};
  }
  proto::receiver_events ev;
  e.rx->provisioned(request.request_id, ring, ev);
  execute(s, ev);
  arm_timer(s);
}

void world::deliver(side s, const proto::inbound_frame& frame) {
  endpoint& e = ep(s);
  const auto payload = frame.payload;
  auto compare = [&](std::span<const std::byte> message) {
    auto& r = e.report;
    if (!e.expected.empty() && e.expected.front()->size() == message.size() &&
        std::equal(message.begin(), message.end(), e.expected.front()->begin())) {
      ++r.delivered;
      r.delivered_bytes += message.size();
    } else {
      ++r.mismatches;
    }
    if (!e.expected.empty()) e.expected.pop_front();
  };
  switch (frame.kind) {
    case proto::frame_kind::data: compare(payload); break;
    case proto::frame_kind::frag_first:
      e.assembling.clear();
      e.assembling.reserve(frame.message_length);
      [[fallthrough]];
    case proto::frame_kind::frag_more: e.assembling.insert(e.assembling.end(), payload.begin(), payload.end()); break;
    case proto::frame_kind::frag_last:
      e.assembling.insert(e.assembling.end(), payload.begin(), payload.end());
      compare(e.assembling);
      e.assembling.clear();
      break;
    default: ++e.report.mismatches; break;
  }
  // The application holds the view for a while; its bytes must stay put until released.
  ++e.frames_held;
  const auto token = frame.token;
  const auto sum = checksum(payload);
  schedule(random_delay(options_.faults.app_release_delay), [this, s, token, payload, sum] {
    endpoint& self = ep(s);
    if (self.report.dead) return;
    if (checksum(payload) != sum) ++self.report.frame_corruptions;
    --self.frames_held;
    proto::receiver_events ev;
    self.rx->release(token, ev);
    execute(s, ev);
  });
}

void world::finish_receive(side s) {
  endpoint& e = ep(s);
  if (e.report.receive_end) return;
  if (e.rx->peer_closed()) {
    e.report.receive_end = make_error_code(error::end_of_stream);
  } else if (e.report.failure) {
    e.assembling.clear();  // a message cut short is never handed over
    e.report.receive_end = *e.report.failure;
  }
}

void world::on_send_done(side s, const proto::send_completion& c) {
  endpoint& e = ep(s);
  auto it = e.sends.find(c.id);
  if (it == e.sends.end()) return;
  auto sent = std::move(it->second);
  e.sends.erase(it);
  if (!c.ec) {
    ++e.report.sends_ok;
    ep(other(s)).expected.push_back(sent.bytes);
  } else if (c.ec == error::enlarge_timeout) {
    ++e.report.sends_timed_out;
    if (options_.retry_timed_out_sends && !e.report.failure) {
      // Zero bytes went out, so the upper layer may simply send the message again.
      auto bytes = *sent.bytes;
      schedule(0ns, [this, s, bytes = std::move(bytes), pieces = sent.pieces]() mutable {
        if (!ep(s).report.dead && !ep(s).report.failure) send(s, std::move(bytes), pieces);
      });
    }
  } else {
    ++e.report.sends_failed;
  }
}

bool world::run_one() {
  if (events_.empty() || livelocked_) return false;
  event next = events_.top();
  events_.pop();
  now_ = std::max(now_, next.at);
  if (now_ != instant_) {
    instant_ = now_;
    events_at_instant_ = 0;
  } else if (++events_at_instant_ > max_events_at_one_instant) {
    livelocked_ = true;
    return false;
  }
  next.run();
  return true;
}

bool world::run_until(const std::function<bool()>& done, std::chrono::nanoseconds limit) {
  const clock_time deadline = now_ + limit;
  while (!done()) {
    if (events_.empty() || livelocked_) return done();
    if (events_.top().at > deadline) {
      now_ = deadline;
      return done();
    }
    run_one();
  }
  return true;
}

void world::run_for(std::chrono::nanoseconds d) {
  const clock_time until = now_ + d;
  while (!events_.empty() && events_.top().at <= until && run_one()) {
  }
  now_ = until;
}

bool world::idle() const { return events_.empty(); }

const endpoint_report& world::report(side s) const { return ep(s).report; }
std::uint32_t world::send_tier(side s) const { return ep(s).tx->tier(); }
std::uint32_t world::receive_tier(side s) const { return ep(s).rx->tier(); }
std::size_t world::registered_bytes(side s) const { return ep(s).provider.registered_bytes(); }
std::size_t world::pending_sends(side s) const { return ep(s).sends.size(); }
const proto::sender& world::sender_of(side s) const { return *ep(s).tx; }
const proto::receiver& world::receiver_of(side s) const { return *ep(s).rx; }

std::size_t world::live_ring_bytes(side s) const {
  std::size_t total = proto::control_block::size;
  for (const auto& ring : ep(s).rx->live_rings()) total += tiers()[ring.tier].ring_bytes();
  return total;
}

std::string world::check_invariants() const {
  if (livelocked_) return "livelock: the clock stopped moving while events kept coming";
  for (side s : {side::a, side::b}) {
    const endpoint& e = ep(s);
    if (e.report.dead || e.report.failure) continue;
    if (e.provider.registered_bytes() != live_ring_bytes(s))
      return std::string("side ") + to_string(s) + ": registered " + std::to_string(e.provider.registered_bytes()) +
             " B but live rings hold " + std::to_string(live_ring_bytes(s)) + " B";
    if (e.report.mismatches != 0)
      return std::string("side ") + to_string(s) + ": delivered a message that was not sent";
    if (e.report.frame_corruptions != 0) return std::string("side ") + to_string(s) + ": frame changed while held";
  }
  return {};
}

}  // namespace bellows::sim
