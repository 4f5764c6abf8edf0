#include "sim/world.hpp"

#include "proto/shared_access.hpp"

#include <algorithm>
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

struct world::endpoint {
  struct outgoing {
    std::shared_ptr<const std::vector<std::byte>> bytes;
    std::size_t pieces;
  };

  endpoint(side s, std::size_t budget) : self(s), provider(arena_key_of(s), budget) {}

  side self;
  sim_provider provider;
  fabric::region control;
  std::optional<proto::channel_core> core;
  std::map<std::uint64_t, outgoing> sends;
  std::uint64_t next_op_id = 1;
  /// What the peer sent successfully and this side has not received yet, in order.
  std::deque<std::shared_ptr<const std::vector<std::byte>>> expected;
  std::size_t frames_held = 0;
  std::optional<clock_time> timer_at;
  bool doorbell_after_flush = false;
  endpoint_report report;
};

/// Carries out one side's actions; the counterpart of the reactor's channel_state.
struct world::executor {
  world& w;
  side s;
  endpoint& e;

  void operator()(const proto::place& a) {
    std::vector<std::span<const std::byte>> pieces{a.prefix()};
    proto::for_each_piece(a.source, a.source_offset, a.source_length, [&](auto p) { pieces.push_back(p); });
    auto ec = e.provider.write({a.key, a.address}, pieces);
    if (!ec && a.has_trailer) {
      const std::span<const std::byte> trailer[] = {a.trailer()};
      ec = e.provider.write({a.key, a.trailer_address}, trailer);
    }
    if (ec) e.core->write_failed(ec);
  }
  void operator()(const proto::ring_doorbell&) { w.ring_peer(s); }
  void operator()(const proto::provision& a) {
    const auto& f = w.options_.faults;
    const auto spread = std::max(f.provision_delay_max - f.provision_delay_min, std::chrono::nanoseconds{0});
    w.schedule(f.provision_delay_min + w.random_delay(spread), [&w = w, s = s, a] { w.provision(s, a); });
  }
  // The world receives views only, which are never lent: an offer is declined.
  void operator()(const proto::lend_buffer& a) { e.core->lent(a.offer_id, std::nullopt); }
  void operator()(const proto::fetch_message& a) { e.core->fetched(a.offer_id, false); }
  // Unreachable while nothing is lent; the simulated provider's writes land as they are made.
  void operator()(const proto::check_handover& a) { e.core->handed_over(a.offer_id, true, w.now_); }
  void operator()(const proto::release_region& a) {
    w.emit(trace_event::what::ring_released, s, 0, 0, 0);
    e.provider.release_region(a.region);
  }
  void operator()(const proto::send_done& a) { w.on_send_done(s, a); }
  void operator()(const proto::receive_done&) { ++e.report.mismatches; }  // the world receives views only
  void operator()(proto::view_done& a) { w.on_delivered(s, a); }
  void operator()(const proto::close_done& a) {
    e.report.close_result = a.ec;
    w.emit(trace_event::what::closed, s, 0, 0, 0);
  }
  void operator()(const proto::tier_changed& a) {
    using what = tier_event::what;
    const auto& t = a.event;
    const auto kind = t.kind == what::requested
                          ? (t.shrink ? trace_event::what::shrink_requested : trace_event::what::enlarge_requested)
                      : t.kind == what::granted     ? trace_event::what::acked_granted
                      : t.kind == what::timed_out   ? trace_event::what::ack_timed_out
                      : t.kind == what::provisioned ? trace_event::what::provisioned
                                                    : trace_event::what::acked_denied;
    if (kind == trace_event::what::ack_timed_out) ++e.report.ack_timeouts;
    w.emit(kind, s, t.from_tier, t.to_tier, t.message_bytes);
  }
  void operator()(const proto::reached& a) {
    auto& death = w.options_.death;
    if (!death || death->first != s || death->second != a.step) return;
    death.reset();
    w.kill(s);
  }
  void operator()(const proto::detach&) {}  // the peer learns of a failure from fail_endpoint
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
    const proto::core_setup setup{proto::local_ring{mine.handle, mine.key, mine.address, mine.data, 0, 0},
                                  e.control.data,
                                  e.control.length,
                                  peer.control.key,
                                  peer.control.address,
                                  proto::remote_ring{theirs.key, theirs.address, 0, 0},
                                  proto::remote_window{peer.provider.arena_key(), 0, sim_provider::arena_size}};
    e.core.emplace(dir, setup, now_);
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
  for (side s : {side::a, side::b}) receive_next(s);
}

world::~world() = default;

const proto::tier_table& world::tiers() const noexcept { return ep(side::a).core->options().tiers; }

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

// ---- the application ----

std::uint64_t world::send(side from, std::vector<std::byte> message, std::size_t pieces) {
  endpoint& e = ep(from);
  const std::uint64_t id = e.next_op_id++;
  auto& out = e.sends[id];
  out.bytes = std::make_shared<const std::vector<std::byte>>(std::move(message));
  out.pieces = std::max<std::size_t>(pieces, 1);
  // A gather list of roughly equal pieces, so fragments straddle piece boundaries.
  const std::span<const std::byte> all(*out.bytes);
  const std::size_t step = std::max<std::size_t>((all.size() + out.pieces - 1) / out.pieces, 1);
  detail::gather ranges;
  ranges.is_single = false;
  ranges.length = all.size();
  for (std::size_t at = 0; at < all.size(); at += step)
    ranges.many.push_back(all.subspan(at, std::min(step, all.size() - at)));
  if (e.report.dead) return id;
  e.core->send(id, std::move(ranges), now_);
  run(from);
  return id;
}

void world::receive_next(side s) {
  endpoint& e = ep(s);
  if (e.report.dead || e.report.receive_end) return;
  const std::uint64_t id = e.next_op_id++;
  e.core->receive_view(id);
  if (!chance(options_.faults.receive_cancel_rate)) return;
  // Whenever it lands, part-way through a fragmented message included, nothing may be lost.
  schedule(random_delay(options_.faults.receive_cancel_delay), [this, s, id] {
    endpoint& self = ep(s);
    if (self.report.dead) return;
    // The app has one receive pending: if it took part of a message, it is this one.
    if (self.core->receiving_part_way()) ++self.report.cancelled_part_way;
    self.core->cancel(id);  // a receive that completed meanwhile is not found: nothing happens
    run(s);
  });
}

void world::close(side s) {
  if (ep(s).report.dead) return;
  ep(s).core->close(ep(s).next_op_id++, now_);
  run(s);
}

void world::set_pressure(side s, bool on) {
  if (ep(s).report.dead) return;
  ep(s).core->set_pressure(on);
  run(s);
}

void world::set_budget(side s, std::size_t bytes) { ep(s).provider.set_budget(bytes); }

void world::on_delivered(side s, proto::view_done& done) {
  endpoint& e = ep(s);
  if (done.ec == proto::cancelled()) {
    ++e.report.receives_cancelled;
    return receive_next(s);
  }
  if (done.ec) {
    e.report.receive_end = done.ec;  // the stream ended; nothing more will come
    return;
  }
  const std::span<const std::byte> message = done.zero_copy ? done.bytes : std::span<const std::byte>(done.assembled);
  auto& r = e.report;
  if (!e.expected.empty() && e.expected.front()->size() == message.size() &&
      std::equal(message.begin(), message.end(), e.expected.front()->begin())) {
    ++r.delivered;
    r.delivered_bytes += message.size();
  } else {
    ++r.mismatches;
  }
  if (!e.expected.empty()) e.expected.pop_front();
  receive_next(s);
  if (!done.zero_copy) return;
  // The application holds the view for a while; its bytes must stay put until released.
  ++e.frames_held;
  const auto token = done.token;
  const auto sum = checksum(message);
  schedule(random_delay(options_.faults.app_release_delay), [this, s, token, message, sum] {
    endpoint& self = ep(s);
    if (self.report.dead) return;
    if (checksum(message) != sum) ++self.report.frame_corruptions;
    --self.frames_held;
    self.core->release(token);
    run(s);
  });
}

void world::on_send_done(side s, const proto::send_done& done) {
  endpoint& e = ep(s);
  auto it = e.sends.find(done.id);
  if (it == e.sends.end()) return;
  auto sent = std::move(it->second);
  e.sends.erase(it);
  if (!done.ec) {
    ++e.report.sends_ok;
    ep(other(s)).expected.push_back(sent.bytes);
  } else {
    ++e.report.sends_failed;
  }
}

// ---- the driver ----

void world::activate(side s) {
  endpoint& e = ep(s);
  if (e.report.dead) return;
  e.core->poll(now_);
  run(s);
}

void world::run(side s) {
  endpoint& e = ep(s);
  executor carry_out{*this, s, e};
  std::vector<proto::action> batch;
  while (e.core->next_batch(batch)) {
    for (auto& a : batch) {
      if (e.report.dead) return;
      std::visit(carry_out, a);
    }
  }
  if (e.report.dead) return;
  note_failure(s);
  arm_timer(s);
}

void world::provision(side s, proto::provision request) {
  endpoint& e = ep(s);
  if (e.report.dead) return;
  auto region = e.provider.register_region(request.bytes);
  std::optional<proto::local_ring> ring;
  if (region)
    ring = proto::local_ring{region->handle, region->key, region->address, region->data, request.request.tier, 0};
  e.core->provisioned(request.request, ring, false);
  run(s);
}

void world::arm_timer(side s) {
  endpoint& e = ep(s);
  const auto deadline = e.core->next_deadline();
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

void world::kill(side s) {
  endpoint& e = ep(s);
  if (e.report.dead) return;
  e.report.dead = true;
  e.provider.drop_held_writes();
  emit(trace_event::what::peer_died, s, 0, 0, 0);
  schedule(options_.death_detection, [this, s] { fail_endpoint(other(s), make_error_code(error::connection_reset)); });
}

void world::note_failure(side s) {
  endpoint& e = ep(s);
  if (!e.core->failed() || e.report.failure) return;
  e.report.failure = e.core->closed_reason();
  emit(trace_event::what::failed, s, 0, 0, 0);
  // The failing side tears the channel down; its peer sees the connection go.
  schedule(options_.death_detection, [this, s] { fail_endpoint(other(s), make_error_code(error::connection_reset)); });
}

void world::fail_endpoint(side s, std::error_code ec) {
  endpoint& e = ep(s);
  if (e.report.dead || e.report.failure) return;
  e.core->link_failed(ec, now_);
  run(s);
}

// ---- the clock ----

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

// ---- what tests look at ----

const endpoint_report& world::report(side s) const { return ep(s).report; }
std::uint32_t world::send_tier(side s) const { return ep(s).core->outgoing().tier(); }
std::uint32_t world::receive_tier(side s) const { return ep(s).core->incoming().tier(); }
std::size_t world::registered_bytes(side s) const { return ep(s).provider.registered_bytes(); }
std::size_t world::pending_sends(side s) const { return ep(s).sends.size(); }
const proto::sender& world::sender_of(side s) const { return ep(s).core->outgoing(); }
const proto::receiver& world::receiver_of(side s) const { return ep(s).core->incoming(); }
channel_stats world::stats(side s) const { return ep(s).core->stats(); }

std::size_t world::live_ring_bytes(side s) const {
  std::size_t total = proto::control_block::size;
  for (const auto& ring : ep(s).core->incoming().live_rings()) total += tiers()[ring.tier].ring_bytes();
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
