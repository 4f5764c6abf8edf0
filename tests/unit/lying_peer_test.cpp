// The receiver and sender state machines fed hand-written memory, as a lying peer would leave
// it: each lie ends the direction with error::protocol_violation, nothing is read out of
// bounds (the ring is a heap buffer of exactly its size, so ASan would see a stray read).
#include "proto/receiver.hpp"
#include "proto/sender.hpp"
#include "proto/shared_access.hpp"

#include <catch2/catch.hpp>

#include <cstring>
#include <memory>

using namespace bellows;
using namespace bellows::proto;

namespace {

const std::error_code violation = make_error_code(error::protocol_violation);

direction_options options() {
  direction_options o{*tier_table::make(default_tiers())};
  o.max_message_size = 1 << 20;
  return o;
}

struct ring_fixture {
  ring_fixture()
      : memory(std::make_unique<std::byte[]>(4096)), rx(options(), local_ring{1, 9, 64, memory.get(), 0, 0}) {}

  /// Writes a frame at `slot` as a peer would; `slots` defaults to the correct count.
  void write(std::uint32_t slot, std::uint32_t seq, frame_kind kind, std::span<const std::byte> payload, int slots = -1,
             bool with_tail = true) {
    std::byte* at = memory.get() + slot * 256;
    const auto n = slots >= 0 ? slots : static_cast<int>(ring_geometry{256, 16}.slots_for(payload.size()));
    const auto header =
        encode_header({seq, static_cast<std::uint32_t>(payload.size()), kind, 0, static_cast<std::uint16_t>(n), 0});
    std::memcpy(at, header.data(), header.size());
    if (!payload.empty()) std::memcpy(at + header_bytes, payload.data(), payload.size());
    if (with_tail && frame_span(payload.size()) + slot * 256 <= 4096)
      put<std::uint64_t>(at + trailer_offset(payload.size()), seq);  // the trailer: seq, then zero
  }
  void write_direct(std::uint32_t slot, std::uint32_t seq, frame_kind kind, std::uint64_t id, std::uint64_t length) {
    const auto p = encode_direct({id, length});
    write(slot, seq, kind, p);
  }
  void write_retier(std::uint32_t slot, std::uint32_t seq, frame_kind kind, std::uint64_t id, std::uint32_t tier) {
    const auto p = encode_retier({id, tier});
    write(slot, seq, kind, p);
  }
  receiver_events poll() {
    receiver_events ev;
    rx.poll(ev);
    return ev;
  }

  std::unique_ptr<std::byte[]> memory;
  receiver rx;
};

std::vector<std::byte> bytes(std::size_t n, std::uint8_t fill = 0xab) {
  return std::vector<std::byte>(n, std::byte{fill});
}

}  // namespace

TEST_CASE("receiver delivers a frame only once its tail arrived", "[proto][receiver]") {
  ring_fixture f;
  const auto payload = bytes(100);
  f.write(0, 1, frame_kind::data, payload, -1, false);
  CHECK(f.poll().frames.empty());
  CHECK(f.rx.heads_without_tail() == 1);
  put<std::uint32_t>(f.memory.get() + trailer_offset(100), 1);
  auto ev = f.poll();
  REQUIRE(ev.frames.size() == 1);
  CHECK(ev.frames[0].payload.size() == 100);
  CHECK(ev.frames[0].payload.data() == f.memory.get() + header_bytes);  // zero copy
}

TEST_CASE("receiver returns credit in half-ring batches as frames are released", "[proto][receiver]") {
  ring_fixture f;
  const auto payload = bytes(1000);  // 4 slots each
  f.write(0, 1, frame_kind::data, payload);
  f.write(4, 2, frame_kind::data, payload);
  auto ev = f.poll();
  REQUIRE(ev.frames.size() == 2);
  receiver_events r1;
  f.rx.release(ev.frames[1].token, r1);  // out of order: nothing can be returned yet
  CHECK_FALSE(r1.credit_word);
  receiver_events r2;
  f.rx.release(ev.frames[0].token, r2);
  REQUIRE(r2.credit_word);
  CHECK(*r2.credit_word == make_credit_word(0, 8));
}

TEST_CASE("receiver rejects each lie about a frame", "[proto][receiver]") {
  ring_fixture f;
  SECTION("unknown kind") { f.write(0, 1, static_cast<frame_kind>(42), bytes(10)); }
  SECTION("length past the ring") {
    f.write(0, 1, frame_kind::data, {}, 1), put<std::uint32_t>(f.memory.get() + 4, 1u << 30);
  }
  SECTION("wrong slot count") { f.write(0, 1, frame_kind::data, bytes(1000), 2); }
  SECTION("trailer with a nonzero second word") {
    f.write(0, 1, frame_kind::data, bytes(10));
    put<std::uint32_t>(f.memory.get() + trailer_offset(10) + 4, 7);
  }
  SECTION("fragment continuation without a first fragment") { f.write(0, 1, frame_kind::frag_more, bytes(100)); }
  SECTION("first fragment announcing more than the maximum message size") {
    auto p = bytes(100);
    put<std::uint64_t>(p.data(), std::uint64_t{1} << 40);
    f.write(0, 1, frame_kind::frag_first, p);
  }
  SECTION("first fragment announcing less than it carries") {
    auto p = bytes(100);
    put<std::uint64_t>(p.data(), 50);
    f.write(0, 1, frame_kind::frag_first, p);
  }
  SECTION("fragments overshooting the announced total") {
    auto p = bytes(1000);
    put<std::uint64_t>(p.data(), 1500);
    f.write(0, 1, frame_kind::frag_first, p);
    f.write(4, 2, frame_kind::frag_more, bytes(1000));
  }
  SECTION("a new message in the middle of a fragmented one") {
    auto p = bytes(1000);
    put<std::uint64_t>(p.data(), 5000);
    f.write(0, 1, frame_kind::frag_first, p);
    f.write(4, 2, frame_kind::data, bytes(10));
  }
  SECTION("enlarge to a tier outside the table") { f.write_retier(0, 1, frame_kind::enlarge_req, 1, 3); }
  SECTION("enlarge to the current tier") { f.write_retier(0, 1, frame_kind::enlarge_req, 1, 0); }
  SECTION("shrink below the first tier") { f.write_retier(0, 1, frame_kind::shrink_req, 1, 0); }
  SECTION("request id zero") { f.write_retier(0, 1, frame_kind::enlarge_req, 0, 1); }
  SECTION("PAD that stops short of the ring's end") { f.write(0, 1, frame_kind::pad, {}, 3); }
  SECTION("DIRECT_OFFER with offer id zero") { f.write_direct(0, 1, frame_kind::direct_offer, 0, 1 << 20); }
  SECTION("DIRECT_OFFER of more than the maximum message size") {
    f.write_direct(0, 1, frame_kind::direct_offer, 1, (1 << 20) + 1);
  }
  SECTION("DIRECT_OFFER with a payload of the wrong size") {
    f.write(0, 1, frame_kind::direct_offer, bytes(24));  // a payload of the wrong size
  }
  SECTION("DIRECT_DONE without an offer") { f.write_direct(0, 1, frame_kind::direct_done, 1, 1 << 20); }
  SECTION("a second DIRECT_OFFER before the first one's message") {
    f.write_direct(0, 1, frame_kind::direct_offer, 1, 1 << 20);
    f.write_direct(1, 2, frame_kind::direct_offer, 2, 1 << 20);
  }
  SECTION("DIRECT_DONE naming another offer") {
    f.write_direct(0, 1, frame_kind::direct_offer, 1, 1 << 20);
    f.write_direct(1, 2, frame_kind::direct_done, 2, 1 << 20);
  }
  SECTION("DIRECT_DONE with another length than offered") {
    f.write_direct(0, 1, frame_kind::direct_offer, 1, 1 << 20);
    f.write_direct(1, 2, frame_kind::direct_done, 1, 1000);
  }
  SECTION("an offer reusing an earlier offer's id") {
    f.write_direct(0, 1, frame_kind::direct_offer, 3, 1 << 20);
    f.write_direct(1, 2, frame_kind::direct_done, 3, 1 << 20);
    f.write_direct(2, 3, frame_kind::direct_offer, 3, 1 << 20);
  }
  SECTION("after an offer, a message of another length through the ring") {
    f.write_direct(0, 1, frame_kind::direct_offer, 1, 1 << 20);
    f.write(1, 2, frame_kind::data, bytes(10));
  }
  SECTION("CLOSE while an offered message has not come") {
    f.write_direct(0, 1, frame_kind::direct_offer, 1, 1 << 20);
    f.write(1, 2, frame_kind::close, {});
  }
  const auto ev = f.poll();
  CHECK(ev.failure == violation);
  CHECK(f.rx.failed());
  receiver_events after;
  f.rx.poll(after);
  CHECK(after.frames.empty());
}

TEST_CASE("receiver takes the next offer ahead of a lent buffer's DONE, and no lie around it", "[proto][receiver]") {
  ring_fixture f;
  f.write_direct(0, 1, frame_kind::direct_offer, 1, 1 << 20);
  REQUIRE(f.poll().frames.size() == 1);
  f.rx.offer_lent(1);
  f.write_direct(1, 2, frame_kind::direct_offer, 2, 1000);
  SECTION("honest: the offer ahead, then both DONEs in offer order") {
    f.write_direct(2, 3, frame_kind::direct_done, 1, 1 << 20);
    f.rx.offer_lent(2);
    f.write_direct(3, 4, frame_kind::direct_done, 2, 1000);
    const auto ev = f.poll();
    CHECK_FALSE(ev.failure);
    REQUIRE(ev.frames.size() == 3);
    CHECK(ev.frames[0].offer_id == 2);
    CHECK(ev.frames[2].offer_id == 2);
    CHECK(ev.frames[2].kind == frame_kind::direct_done);
    return;
  }
  SECTION("a third offer") { f.write_direct(2, 3, frame_kind::direct_offer, 3, 1000); }
  SECTION("the DONE of the offer ahead first") { f.write_direct(2, 3, frame_kind::direct_done, 2, 1000); }
  SECTION("a message through the ring before the lent one's DONE") { f.write(2, 3, frame_kind::data, bytes(10)); }
  SECTION("CLOSE") { f.write(2, 3, frame_kind::close, {}); }
  const auto ev = f.poll();
  CHECK(ev.failure == violation);
}

TEST_CASE("receiver refuses an offer ahead of one whose buffer was not lent", "[proto][receiver]") {
  ring_fixture f;
  f.write_direct(0, 1, frame_kind::direct_offer, 1, 1 << 20);
  f.rx.offer_lent(7);  // another offer's: says nothing about this one
  f.write_direct(1, 2, frame_kind::direct_offer, 2, 1000);
  CHECK(f.poll().failure == violation);
}

TEST_CASE("receiver rejects a reused request id after a granted enlargement", "[proto][receiver]") {
  ring_fixture f;
  f.write_retier(0, 1, frame_kind::enlarge_req, 5, 1);
  auto ev = f.poll();
  REQUIRE(ev.provision);
  auto big = std::make_unique<std::byte[]>(65536);
  receiver_events granted;
  f.rx.provisioned(5, local_ring{2, 9, 8192, big.get(), 1, 0}, granted);
  REQUIRE(granted.ack);
  CHECK(granted.ack->status == ack_status::granted);
  CHECK(granted.ack->epoch == 1);
  // The old ring stays until the peer's next frame shows up in the new one.
  CHECK(granted.released_regions.empty());
  // Now a lying peer repeats request 5 as a shrink in the new ring.
  const auto p = encode_retier({5, 0});
  const auto header = encode_header({2, retier_payload_bytes, frame_kind::shrink_req, 0, 1, 0});
  std::memcpy(big.get(), header.data(), header.size());
  std::memcpy(big.get() + header_bytes, p.data(), p.size());
  put<std::uint32_t>(big.get() + trailer_offset(retier_payload_bytes), 2);
  receiver_events lie;
  f.rx.poll(lie);
  CHECK(lie.released_regions == std::vector<std::uint64_t>{1});  // nothing held: the old ring went
  CHECK(lie.failure == violation);
}

TEST_CASE("sender rejects lies in its control block", "[proto][sender]") {
  alignas(64) std::array<std::byte, control_block::size> cb{};
  const remote_window window{9, 0, 1 << 20};
  sender tx(options(), remote_ring{9, 4096, 0, 0}, window, clock_time{});
  const auto payload = bytes(100 * 1024);
  const std::span<const std::byte> parts[] = {payload};
  sender_events ev;
  tx.submit(1, {parts, payload.size(), {}}, clock_time{}, ev);
  tx.step(cb.data(), clock_time{}, ev);
  REQUIRE(ev.writes.size() == 1);
  REQUIRE(ev.writes[0].header.kind == frame_kind::enlarge_req);
  REQUIRE(tx.awaiting_ack());

  SECTION("credit for more slots than were written") {
    put<std::uint64_t>(cb.data() + control_block::credit_offset, make_credit_word(0, 2));
  }
  SECTION("an ack naming a key outside the granted region") {
    const auto ack = encode_ack({1, ack_status::granted, 2, 4096, 10, 65536, 16, 1});
    std::memcpy(cb.data() + control_block::ack_offset, ack.data(), ack.size());
  }
  SECTION("an ack naming an offset outside the granted region") {
    const auto ack = encode_ack({1, ack_status::granted, 2, (1 << 20) - 65536, 9, 65536, 16, 1});
    std::memcpy(cb.data() + control_block::ack_offset, ack.data(), ack.size());
  }
  SECTION("an ack for a request never made") {
    const auto ack = encode_ack({2, ack_status::granted, 2, 4096, 9, 65536, 16, 1});
    std::memcpy(cb.data() + control_block::ack_offset, ack.data(), ack.size());
  }
  sender_events after;
  tx.step(cb.data(), clock_time{}, after);
  CHECK(after.failure == violation);
  REQUIRE(after.completions.size() == 1);
  CHECK(after.completions[0].ec == violation);
  CHECK(after.completions[0].bytes == 0);
}

namespace {

/// A sender that has just offered one message above the largest frame for a lent buffer.
struct offering_sender {
  static direction_options lending() {
    auto o = options();
    o.offer_direct_above = 512 << 10;
    return o;
  }
  offering_sender() {
    sender_events ev;
    tx.submit(1, {parts, payload.size(), {}}, clock_time{}, ev);
    tx.step(cb.data(), clock_time{}, ev);
    REQUIRE(ev.writes.size() == 1);
    REQUIRE(ev.writes[0].header.kind == frame_kind::direct_offer);
    REQUIRE(tx.awaiting_ack());
  }

  alignas(64) std::array<std::byte, control_block::size> cb{};
  sender tx{lending(), remote_ring{9, 4096, 0, 0}, remote_window{9, 0, 1 << 20}, clock_time{}};
  std::vector<std::byte> payload = bytes(600 << 10);
  std::span<const std::byte> parts[1] = {payload};
};

}  // namespace

TEST_CASE("sender rejects lies in its lend slot", "[proto][sender]") {
  offering_sender f;
  auto& [cb, tx, payload, parts] = f;
  std::byte* slot = cb.data() + control_block::lend_offset;

  SECTION("a buffer shorter than the message") {
    const auto lie = encode_lend({1, ack_status::granted, std::uint64_t{1} << 40, 9, payload.size() - 1});
    std::memcpy(slot, lie.data(), lie.size());
  }
  SECTION("an answer to an offer never made") {
    const auto lie = encode_lend({2, ack_status::granted, std::uint64_t{1} << 40, 9, payload.size()});
    std::memcpy(slot, lie.data(), lie.size());
  }
  SECTION("an unknown status") {
    auto lie = encode_lend({1, ack_status::granted, std::uint64_t{1} << 40, 9, payload.size()});
    put<std::uint32_t>(lie.data() + lend_layout::status, 7);
    std::memcpy(slot, lie.data(), lie.size());
  }
  SECTION("a tail that names another offer") {
    auto lie = encode_lend({1, ack_status::granted, std::uint64_t{1} << 40, 9, payload.size()});
    put<std::uint64_t>(lie.data() + lend_layout::tail, 5);
    std::memcpy(slot, lie.data(), lie.size());
  }
  sender_events after;
  tx.step(cb.data(), clock_time{}, after);
  CHECK(after.failure == violation);
  REQUIRE(after.completions.size() == 1);
  CHECK(after.completions[0].ec == violation);
  CHECK(after.writes.empty());  // nothing went to the place the lie named
}

TEST_CASE("sender rejects a receipt for a message it never wrote", "[proto][sender]") {
  offering_sender f;
  auto& [cb, tx, payload, parts] = f;
  const auto grant = encode_lend({1, ack_status::granted, std::uint64_t{1} << 40, 9, payload.size()});
  std::memcpy(cb.data() + control_block::lend_offset, grant.data(), grant.size());
  sender_events written;
  tx.step(cb.data(), clock_time{}, written);
  REQUIRE(written.lent_write == 1);
  REQUIRE(written.completions.empty());  // no handover: it waits for the receipt
  put<std::uint64_t>(cb.data() + control_block::receipt_offset, 2);
  sender_events after;
  tx.step(cb.data(), clock_time{}, after);
  CHECK(after.failure == violation);
  REQUIRE(after.completions.size() == 1);
  CHECK(after.completions[0].ec == violation);
}

TEST_CASE("sender accepts a valid ack and moves to the new ring", "[proto][sender]") {
  alignas(64) std::array<std::byte, control_block::size> cb{};
  sender tx(options(), remote_ring{9, 4096, 0, 0}, remote_window{9, 0, 1 << 30}, clock_time{});
  const auto payload = bytes(100 * 1024);
  const std::span<const std::byte> parts[] = {payload};
  sender_events ev;
  tx.submit(1, {parts, payload.size(), {}}, clock_time{}, ev);
  tx.step(cb.data(), clock_time{}, ev);
  const auto ack = encode_ack({1, ack_status::granted, 2, 1 << 20, 9, 65536, 16, 1});
  std::memcpy(cb.data() + control_block::ack_offset, ack.data(), 8);  // head only
  sender_events partial;
  tx.step(cb.data(), clock_time{}, partial);
  CHECK(tx.awaiting_ack());
  CHECK(tx.partial_acks_seen() == 1);
  std::memcpy(cb.data() + control_block::ack_offset, ack.data(), ack.size());
  sender_events done;
  tx.step(cb.data(), clock_time{}, done);
  CHECK_FALSE(tx.awaiting_ack());
  CHECK(tx.tier() == 2);
  REQUIRE(done.writes.size() == 1);
  CHECK(done.writes[0].ring.address == 1 << 20);
  CHECK(done.writes[0].header.kind == frame_kind::data);
  REQUIRE(done.completions.size() == 1);
  CHECK(done.completions[0].bytes == payload.size());
}

TEST_CASE("receiver never takes a frame's old interior for the next lap's header", "[proto][receiver]") {
  // An honest peer. The first frame spans slots 0 and 1, and its payload happens to put, where
  // slot 1 starts, the very sequence number the receiver will expect there on the next lap.
  ring_fixture f;
  auto payload = bytes(400);  // slots 0-1
  const std::uint32_t expected_at_slot_1_next_lap = 17;
  put<std::uint32_t>(payload.data() + 256 - header_bytes, expected_at_slot_1_next_lap);
  put<std::uint32_t>(payload.data() + 256 - header_bytes + 4, 0);
  f.write(0, 1, frame_kind::data, payload);
  for (std::uint32_t slot = 2; slot < 16; ++slot) f.write(slot, slot, frame_kind::data, bytes(8));  // seq 2..15
  auto lap1 = f.poll();
  REQUIRE(lap1.frames.size() == 15);
  for (const auto& frame : lap1.frames) {
    receiver_events ev;
    f.rx.release(frame.token, ev);
  }
  // Next lap: seq 16 at slot 0, then the receiver looks at slot 1 before the peer wrote it.
  f.write(0, 16, frame_kind::data, bytes(8));
  auto lap2 = f.poll();
  CHECK_FALSE(lap2.failure);
  CHECK(lap2.frames.size() == 1);
  f.write(1, 17, frame_kind::data, bytes(8, 0x17));
  auto lap2b = f.poll();
  CHECK_FALSE(lap2b.failure);
  REQUIRE(lap2b.frames.size() == 1);
  CHECK(lap2b.frames[0].payload[0] == std::byte{0x17});
}
