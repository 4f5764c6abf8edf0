// One scenario per fault, each over the deterministic simulator and bounded in virtual time.
#include "sim/world.hpp"
#include "support/messages.hpp"

#include <catch2/catch.hpp>

#include <algorithm>

using namespace bellows;
using namespace bellows::sim;
using namespace std::chrono_literals;
using what = trace_event::what;

namespace {

const std::error_code reset = make_error_code(error::connection_reset);

std::size_t count(const world& w, what kind, side where) {
  return static_cast<std::size_t>(std::count_if(
      w.trace().begin(), w.trace().end(), [&](const trace_event& e) { return e.kind == kind && e.where == where; }));
}

struct scenario {
  explicit scenario(world_options o) : w(std::move(o)) {}
  std::uint64_t send(side from, std::size_t size, std::size_t pieces = 1) {
    return w.send(from, test::random_bytes(rng, size), pieces);
  }
  bool run_until_delivered(side to, std::uint64_t n, std::chrono::nanoseconds limit = 50ms) {
    return w.run_until([&] { return w.report(to).delivered >= n; }, limit);
  }
  std::mt19937_64 rng{7};
  world w;
};

void require_clean(const world& w) {
  INFO(w.check_invariants());
  REQUIRE(w.check_invariants().empty());
}

}  // namespace

TEST_CASE("small messages stay on the first tier", "[sim]") {
  scenario s({});
  for (int i = 0; i < 100; ++i) s.send(i % 2 ? side::a : side::b, static_cast<std::size_t>(i * 20));
  REQUIRE(s.w.run_until([&] { return s.w.report(side::a).delivered + s.w.report(side::b).delivered == 100; }, 10ms));
  CHECK(s.w.send_tier(side::a) == 0);
  CHECK(s.w.send_tier(side::b) == 0);
  CHECK(count(s.w, what::enlarge_requested, side::a) == 0);
  CHECK(s.w.registered_bytes(side::b) == 128 + 4096);
  require_clean(s.w);
}

TEST_CASE("a sender that keeps outrunning its first ring grows it for throughput, then shrinks after idle", "[sim]") {
  world_options o;
  o.idle_shrink_after = 5ms;
  scenario s(o);
  // 1.2 MB of 400 B messages queued at once: each takes two of the first ring's 16 slots, so
  // the ring runs out of credit every few messages, far more often than the growth threshold,
  // and the next tier's ring holds twice as many of them.
  constexpr int messages = 3000;
  for (int i = 0; i < messages; ++i) s.send(side::a, 400);
  REQUIRE(s.run_until_delivered(side::b, messages));
  CHECK(count(s.w, what::enlarge_requested, side::a) == 1);
  CHECK(count(s.w, what::acked_granted, side::a) == 1);
  for (const auto& e : s.w.trace()) {
    if (e.kind != what::enlarge_requested) continue;
    CHECK(e.bytes == 0);  // no message asked for it
    CHECK(e.to_tier == 1);
  }
  CHECK(s.w.send_tier(side::a) == 1);
  // Growth asks for 64 stalls within 10 ms, and each is one the channel's stats count.
  CHECK(s.w.stats(side::a).credit_stalls >= 64);
  CHECK(s.w.stats(side::b).credit_stalls == 0);
  CHECK(s.w.report(side::a).sends_failed == 0);
  CHECK(s.w.report(side::b).mismatches == 0);
  s.w.run_for(10ms);
  CHECK(s.w.send_tier(side::a) == 0);
  CHECK(s.w.registered_bytes(side::b) == 128 + 4096);
  CHECK(count(s.w, what::shrink_requested, side::a) == 1);
  require_clean(s.w);
}

TEST_CASE("a sender outrunning its ring with messages of one slot each keeps the ring: a larger holds no more",
          "[sim]") {
  scenario s(world_options{});
  // 200 B messages take one of the first ring's 16 slots each, as they would of any tier's.
  constexpr int messages = 3000;
  for (int i = 0; i < messages; ++i) s.send(side::a, 200);
  REQUIRE(s.run_until_delivered(side::b, messages));
  CHECK(s.w.stats(side::a).credit_stalls >= 64);  // often enough to grow, were growing any use
  CHECK(count(s.w, what::enlarge_requested, side::a) == 0);
  CHECK(s.w.send_tier(side::a) == 0);
  CHECK(s.w.report(side::a).sends_failed == 0);
  CHECK(s.w.report(side::b).mismatches == 0);
  require_clean(s.w);
}

TEST_CASE("a sender outrunning the ring its messages' size chose grows it further for throughput", "[sim]") {
  scenario s(world_options{});
  // 6,000 B messages ask for tier 1 by their size, where each takes two of its 16 slots of
  // 4 KiB; streamed, they outrun it and ask for tier 2, whose slots hold them one each.
  constexpr int messages = 2000;
  for (int i = 0; i < messages; ++i) s.send(side::a, 6000);
  REQUIRE(s.run_until_delivered(side::b, messages));
  std::vector<std::pair<std::uint32_t, std::uint64_t>> requests;  // to tier, bytes named
  for (const auto& e : s.w.trace())
    if (e.kind == what::enlarge_requested && e.where == side::a) requests.emplace_back(e.to_tier, e.bytes);
  REQUIRE(requests.size() == 2);
  CHECK(requests[0] == std::pair<std::uint32_t, std::uint64_t>{1, 6000});  // by size
  CHECK(requests[1] == std::pair<std::uint32_t, std::uint64_t>{2, 0});     // for throughput
  CHECK(s.w.send_tier(side::a) == 2);
  CHECK(s.w.report(side::a).sends_failed == 0);
  CHECK(s.w.report(side::b).mismatches == 0);
  require_clean(s.w);
}

TEST_CASE("a large message enlarges straight to the tier it needs, then shrinks after idle", "[sim]") {
  world_options o;
  o.idle_shrink_after = 5ms;
  scenario s(o);
  s.send(side::a, 100 * 1024, 3);
  REQUIRE(s.run_until_delivered(side::b, 1));
  CHECK(s.w.send_tier(side::a) == 2);  // tier 1 (64 KiB ring) is skipped
  CHECK(s.w.receive_tier(side::b) == 2);
  CHECK(count(s.w, what::enlarge_requested, side::a) == 1);
  CHECK(count(s.w, what::acked_granted, side::a) == 1);
  s.w.run_for(1ms);
  CHECK(s.w.registered_bytes(side::b) == 128 + (1u << 20));  // the old 4 KiB ring was released
  s.w.run_for(10ms);
  CHECK(s.w.send_tier(side::a) == 0);
  CHECK(s.w.registered_bytes(side::b) == 128 + 4096);
  CHECK(count(s.w, what::shrink_requested, side::a) == 1);
  require_clean(s.w);
}

TEST_CASE("torn writes: the receiver waits for the tail, the sender for the ack's tail", "[sim][fault]") {
  world_options o;
  o.faults.torn_write_rate = 1.0;
  o.faults.torn_write_delay = 20us;
  scenario s(o);
  for (int i = 0; i < 40; ++i) s.send(side::a, static_cast<std::size_t>(100 + i * 997));
  s.send(side::a, 300 * 1024);
  REQUIRE(s.run_until_delivered(side::b, 41));
  CHECK(s.w.receiver_of(side::b).heads_without_tail() > 0);
  CHECK(s.w.sender_of(side::a).partial_acks_seen() > 0);
  CHECK(s.w.report(side::b).mismatches == 0);
  require_clean(s.w);
}

TEST_CASE("a late ack: sends go on in fragments meanwhile, then the channel switches mid-message", "[sim][fault]") {
  world_options o;
  o.ack_timeout = 1ms;
  o.faults.provision_delay_min = o.faults.provision_delay_max = 3ms;
  scenario s(o);
  s.send(side::a, 200 * 1024);
  s.send(side::a, 10);  // queued behind the request
  REQUIRE(s.w.run_until([&] { return s.w.report(side::a).ack_timeouts == 1; }, 10ms));
  // Fallen back: the first message is going out through the 4 KiB ring, stalled on credit
  // until the peer answers.
  CHECK(s.w.send_tier(side::a) == 0);
  CHECK(s.w.sender_of(side::a).awaiting_ack());
  CHECK(s.w.report(side::a).sends_failed == 0);
  REQUIRE(s.run_until_delivered(side::b, 2));
  CHECK(s.w.send_tier(side::a) == 2);  // the late grant was honoured
  CHECK(s.w.receiver_of(side::b).tier() == 2);
  CHECK(s.w.report(side::a).sends_ok == 2);
  // Once switched, a large message goes whole, without asking again.
  s.send(side::a, 50 * 1024);
  REQUIRE(s.run_until_delivered(side::b, 3));
  CHECK(count(s.w, what::enlarge_requested, side::a) == 1);
  require_clean(s.w);
}

TEST_CASE("a denied enlargement falls back to fragmentation through the current tier", "[sim][fault]") {
  world_options o;
  o.faults.budget_bytes = 128 + 4096 + 60 * 1024;  // room for neither the 64 KiB nor the 1 MiB ring
  scenario s(o);
  s.send(side::a, 700 * 1024, 2);
  s.send(side::a, 3000);
  REQUIRE(s.run_until_delivered(side::b, 2, 200ms));
  CHECK(count(s.w, what::acked_denied, side::a) == 1);
  CHECK(s.w.send_tier(side::a) == 0);
  CHECK(s.w.report(side::a).sends_ok == 2);
  CHECK(s.w.report(side::b).delivered_bytes == 700 * 1024 + 3000);
  require_clean(s.w);
}

TEST_CASE("messages larger than the largest tier are fragmented through it", "[sim]") {
  scenario s({});
  s.send(side::b, 4u << 20, 4);
  s.send(side::b, 5);
  REQUIRE(s.run_until_delivered(side::a, 2, 200ms));
  CHECK(s.w.send_tier(side::b) == 2);
  CHECK(s.w.report(side::a).delivered_bytes == (4u << 20) + 5);
  require_clean(s.w);
}

TEST_CASE("receiver pressure makes the sender shrink without waiting for idle", "[sim]") {
  world_options o;
  o.idle_shrink_after = 1s;
  scenario s(o);
  s.send(side::a, 100 * 1024);
  REQUIRE(s.run_until_delivered(side::b, 1));
  REQUIRE(s.w.send_tier(side::a) == 2);
  s.w.set_pressure(side::b, true);
  s.send(side::a, 10);  // the doorbell makes A look at its control block
  REQUIRE(s.w.run_until([&] { return s.w.send_tier(side::a) == 0; }, 5ms));
  require_clean(s.w);
}

TEST_CASE("a shrink racing with a new large message: the message waits, then enlarges again", "[sim][fault]") {
  world_options o;
  o.idle_shrink_after = 2ms;
  o.ack_timeout = 10ms;
  o.faults.provision_delay_min = o.faults.provision_delay_max = 500us;
  scenario s(o);
  s.send(side::a, 100 * 1024);
  REQUIRE(s.run_until_delivered(side::b, 1));
  REQUIRE(s.w.run_until([&] { return count(s.w, what::shrink_requested, side::a) == 1; }, 10ms));
  REQUIRE(s.w.sender_of(side::a).awaiting_ack());
  s.send(side::a, 100 * 1024);
  REQUIRE(s.run_until_delivered(side::b, 2));
  std::vector<what> sequence;
  for (const auto& e : s.w.trace())
    if (e.where == side::a &&
        (e.kind == what::shrink_requested || e.kind == what::enlarge_requested || e.kind == what::acked_granted))
      sequence.push_back(e.kind);
  CHECK(sequence == std::vector<what>{what::enlarge_requested, what::acked_granted, what::shrink_requested,
                                      what::acked_granted, what::enlarge_requested, what::acked_granted});
  CHECK(s.w.send_tier(side::a) == 2);
  CHECK(s.w.report(side::a).ack_timeouts == 0);
  require_clean(s.w);
}

TEST_CASE("graceful close completes once the peer consumed everything", "[sim]") {
  world_options o;
  o.faults.app_release_delay = 200us;
  scenario s(o);
  for (int i = 0; i < 20; ++i) s.send(side::a, 1500);
  s.w.close(side::a);
  REQUIRE(s.w.run_until([&] { return s.w.report(side::a).close_result.has_value(); }, 20ms));
  CHECK_FALSE(*s.w.report(side::a).close_result);
  CHECK(s.w.report(side::b).delivered == 20);
  CHECK(s.w.report(side::b).receive_end == make_error_code(error::end_of_stream));
  s.send(side::a, 10);
  s.w.run_for(1ms);
  CHECK(s.w.report(side::a).sends_failed == 1);  // channel_closed
}

TEST_CASE("a peer that dies while idle fails the survivor's operations", "[sim][fault]") {
  scenario s({});
  s.send(side::a, 100);
  REQUIRE(s.run_until_delivered(side::b, 1));
  s.w.kill(side::b);
  REQUIRE(s.w.run_until([&] { return s.w.report(side::a).failure.has_value(); }, 5ms));
  CHECK(*s.w.report(side::a).failure == reset);
  CHECK(s.w.report(side::a).receive_end == reset);
  s.send(side::a, 100);
  s.w.run_for(1ms);
  CHECK(s.w.report(side::a).sends_failed == 1);
  CHECK(s.w.pending_sends(side::a) == 0);
}

TEST_CASE("a peer that dies at any step: pending operations fail, nothing hangs", "[sim][fault]") {
  const auto point =
      GENERATE(proto::step::enlarge_request_due, proto::step::enlarge_request_written, proto::step::ring_provisioned,
               proto::step::ack_head_written, proto::step::fragment_written, proto::step::shrink_request_written,
               proto::step::close_received);
  INFO("death " << proto::to_string(point));
  // The sender-side steps kill A (the sender); the receiver-side steps kill B.
  const bool receiver_dies = point == proto::step::ring_provisioned || point == proto::step::ack_head_written ||
                             point == proto::step::close_received;
  const side victim = receiver_dies ? side::b : side::a;
  const side survivor = other(victim);
  world_options o;
  o.idle_shrink_after = 1ms;
  o.ack_timeout = 1s;  // only the death may end the wait
  o.death = {victim, point};
  o.tiers = {{256, 16}, {4096, 16}};  // 4 MiB fragments through tier 1: mid-fragment is guaranteed
  scenario s(o);
  // Pending both ways: B's own sends, and A's traffic toward the step.
  s.send(side::b, 500);
  if (point == proto::step::shrink_request_written) {
    s.send(side::a, 20 * 1024);
    REQUIRE(s.run_until_delivered(side::b, 1));
    s.w.run_for(3ms);
  } else if (point == proto::step::close_received) {
    s.send(side::a, 1000);
    s.w.close(side::a);
  } else {
    s.send(side::a, 4u << 20);
  }
  s.send(side::a, 100);
  const bool finished = s.w.run_until(
      [&] {
        const auto& r = s.w.report(survivor);
        return r.failure && s.w.pending_sends(survivor) == 0 && r.receive_end;
      },
      100ms);
  CHECK(s.w.report(victim).dead);
  REQUIRE(finished);
  CHECK(*s.w.report(survivor).failure == reset);
  if (survivor == side::a) {
    CHECK(s.w.report(side::a).sends_ok + s.w.report(side::a).sends_failed >= 1);
    if (point == proto::step::close_received) CHECK(s.w.report(side::a).close_result == reset);
  }
  CHECK(s.w.report(survivor).mismatches == 0);
  CHECK(s.w.report(survivor).delivered <= 1);  // never a message cut short
}

TEST_CASE("a denied shrink is retried on its own once the denial backoff is over", "[sim][fault]") {
  world_options o;
  o.idle_shrink_after = 1ms;
  o.retry_after_denial = 3ms;
  scenario s(o);
  s.send(side::a, 100 * 1024);
  REQUIRE(s.run_until_delivered(side::b, 1));
  REQUIRE(s.w.send_tier(side::a) == 2);
  s.w.set_budget(side::b, s.w.registered_bytes(side::b));  // no room for the small ring
  REQUIRE(s.w.run_until([&] { return count(s.w, what::acked_denied, side::a) == 1; }, 5ms));
  CHECK(s.w.send_tier(side::a) == 2);
  s.w.set_budget(side::b, SIZE_MAX);
  // Nothing else happens on the channel: only the sender's own deadline can bring the retry.
  const auto denied_at = s.w.now();
  const bool shrank = s.w.run_until([&] { return s.w.send_tier(side::a) == 0; }, 10ms);
  require_clean(s.w);
  REQUIRE(shrank);
  CHECK(count(s.w, what::shrink_requested, side::a) == 2);
  CHECK(s.w.now() - denied_at >= std::chrono::nanoseconds(o.retry_after_denial) - 100us);
  require_clean(s.w);
}
