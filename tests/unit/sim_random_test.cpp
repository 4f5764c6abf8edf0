// Seeded randomized runs of the simulator: thousands of messages of 0 B to 4 MiB both ways
// with random interleavings and faults. Every message must arrive exactly once, in order and
// byte-identical; tiers grow only when a message needs it and shrink after idle; registered
// bytes equal the rings alive. Replay a failure with BELLOWS_SEED=<seed>.
#include "sim/world.hpp"
#include "support/messages.hpp"

#include <catch2/catch.hpp>

#include <cstdlib>
#include <iostream>

using namespace bellows;
using namespace bellows::sim;
using namespace std::chrono_literals;

namespace {

std::vector<std::uint64_t> seeds() {
  if (const char* s = std::getenv("BELLOWS_SEED")) return {std::strtoull(s, nullptr, 10)};
  return {1, 2, 3, 4, 5, 6};
}

std::size_t random_size(std::mt19937_64& rng) {
  const auto pick = rng() % 100;
  auto log_uniform = [&](double lo, double hi) {
    return static_cast<std::size_t>(std::exp(std::uniform_real_distribution<double>(std::log(lo), std::log(hi))(rng)));
  };
  if (pick < 5) return 0;
  if (pick < 70) return log_uniform(1, 2024);           // fits the first tier
  if (pick < 92) return log_uniform(2025, 512 * 1024);  // needs a larger tier
  return log_uniform(512 * 1024, 4 * 1024 * 1024 + 1);  // larger than any tier
}

world_options random_options(std::uint64_t seed, std::mt19937_64& rng) {
  world_options o;
  o.seed = seed;
  o.idle_shrink_after = 2ms;
  o.ack_timeout = 1ms;
  auto& f = o.faults;
  f.torn_write_rate = (rng() % 2) ? 0.3 : 0.0;
  f.doorbell_delay_rate = (rng() % 2) ? 0.3 : 0.0;
  f.provision_delay_min = 1us;
  // Sometimes slower than the ack timeout, so sends time out and are retried.
  f.provision_delay_max = (rng() % 3 == 0) ? 2ms : 50us;
  f.app_release_delay = std::chrono::microseconds(rng() % 100);
  f.receive_cancel_rate = (rng() % 2) ? 0.2 : 0.0;
  // Sometimes room for the 64 KiB tier but not the 1 MiB one on top of it.
  f.budget_bytes = (rng() % 3 == 0) ? 128 + 4096 + 65536 + 4096 : SIZE_MAX;
  return o;
}

}  // namespace

TEST_CASE("seeded random traffic is delivered exactly once, in order, intact", "[sim][random]") {
  std::uint64_t cancelled_part_way = 0;
  bool cancels = false;
  for (const std::uint64_t seed : seeds()) {
    std::cout << "sim random run: seed=" << seed << " (replay with BELLOWS_SEED=" << seed << ")" << std::endl;
    std::mt19937_64 rng(seed);
    const world_options options = random_options(seed, rng);
    const auto& f = options.faults;
    cancels = cancels || f.receive_cancel_rate > 0;
    std::cout << "  faults: torn writes " << f.torn_write_rate << ", late doorbells " << f.doorbell_delay_rate
              << ", provisioning up to " << f.provision_delay_max.count() / 1000 << " us, budget "
              << (f.budget_bytes == SIZE_MAX ? std::string("unlimited") : std::to_string(f.budget_bytes) + " B")
              << ", receives cancelled " << f.receive_cancel_rate << std::endl;
    world w(options);
    const auto& tiers = w.tiers();
    constexpr int messages = 3000;
    for (int i = 0; i < messages; ++i) {
      const side from = rng() % 2 ? side::a : side::b;
      w.send(from, test::random_bytes(rng, random_size(rng)), 1 + rng() % 3);
      const auto gap = rng() % 100;
      if (gap < 60) continue;  // burst: several sends in one go
      if (gap < 98)
        w.run_for(std::chrono::microseconds(rng() % 200));
      else
        w.run_for(options.idle_shrink_after * 2);  // a quiet spell long enough to shrink
      const std::string broken = w.check_invariants();
      INFO("seed " << seed << " after message " << i);
      REQUIRE(broken.empty());
    }
    INFO("seed " << seed);
    const bool drained = w.run_until([&] { return w.pending_sends(side::a) + w.pending_sends(side::b) == 0; }, 20s);
    for (side s : {side::a, side::b}) {
      const auto& tx = w.sender_of(s);
      const auto& rx = w.receiver_of(s);
      INFO("side " << to_string(s) << ": pending " << w.pending_sends(s) << ", send tier " << tx.tier()
                   << ", awaiting ack " << tx.awaiting_ack() << ", stalled " << tx.stalled_on_credit()
                   << ", free slots " << tx.free_slots() << ", receive tier " << rx.tier() << ", awaiting provision "
                   << rx.awaiting_provision() << ", failed " << tx.failed() << rx.failed() << ", events left "
                   << !w.idle());
      CHECK(drained);
    }
    REQUIRE(drained);
    // Quiet from here on: each direction must shrink back by itself and release what it held.
    const bool shrank = w.run_until(
        [&] {
          return w.send_tier(side::a) == 0 && w.send_tier(side::b) == 0 && !w.sender_of(side::a).awaiting_ack() &&
                 !w.sender_of(side::b).awaiting_ack() && w.idle();
        },
        100ms);
    for (side s : {side::a, side::b})
      UNSCOPED_INFO("side " << to_string(s) << ": send tier " << w.send_tier(s) << ", awaiting ack "
                            << w.sender_of(s).awaiting_ack() << ", receive tier " << w.receiver_of(s).tier()
                            << ", failed " << w.sender_of(s).failed() << w.receiver_of(s).failed() << " ("
                            << (w.report(s).failure ? w.report(s).failure->message() : "") << "), events left "
                            << !w.idle());
    REQUIRE(shrank);
    REQUIRE(w.check_invariants().empty());

    std::uint64_t delivered = 0;
    for (side s : {side::a, side::b}) {
      const auto& mine = w.report(s);
      const auto& peer = w.report(other(s));
      INFO("failure: " << (mine.failure ? mine.failure->message() : "none"));
      CHECK(mine.sends_failed == 0);
      CHECK(mine.mismatches == 0);
      CHECK(mine.frame_corruptions == 0);
      CHECK(peer.delivered == mine.sends_ok);  // exactly once: each successful send, no more
      CHECK_FALSE(mine.failure);
      // Back to idle: both directions shrank and only the first rings stay registered.
      CHECK(w.send_tier(s) == 0);
      CHECK(w.registered_bytes(s) == 128 + tiers[0].ring_bytes());
      delivered += peer.delivered;
    }
    // A slow answer never fails a send: every message arrives.
    CHECK(delivered == messages);

    std::size_t enlargements = 0, shrinks = 0;
    for (const auto& e : w.trace()) {
      if (e.kind == trace_event::what::shrink_requested) ++shrinks;
      if (e.kind != trace_event::what::enlarge_requested) continue;
      ++enlargements;
      // A message too large for the current tier asks for the tier it needs; a sender that
      // outruns its ring asks for the next one, naming no message.
      if (e.bytes == 0) {
        CHECK(e.to_tier == e.from_tier + 1);
        continue;
      }
      CHECK(e.bytes > tiers.max_message(e.from_tier));
      CHECK(e.to_tier == tiers.smallest_fitting(e.bytes).value_or(tiers.largest()));
    }
    CHECK(enlargements > 0);
    CHECK(shrinks > 0);
    const auto& ra = w.report(side::a);
    const auto& rb = w.report(side::b);
    cancelled_part_way += ra.cancelled_part_way + rb.cancelled_part_way;
    std::cout << "  delivered " << delivered << " messages, " << enlargements << " enlargements, " << shrinks
              << " shrinks, " << ra.ack_timeouts + rb.ack_timeouts << " ack timeouts, "
              << ra.receives_cancelled + rb.receives_cancelled << " receives cancelled ("
              << ra.cancelled_part_way + rb.cancelled_part_way << " part-way through a message), virtual time "
              << std::chrono::duration_cast<std::chrono::milliseconds>(w.now()).count() << " ms" << std::endl;
  }
  // The cancellations met messages part-way, where one could be lost.
  if (cancels) CHECK(cancelled_part_way > 0);
}
