// Decoders and validators of the wire format: each malformed field is rejected with
// error::protocol_violation.
#include "proto/wire.hpp"
#include "proto/shared_access.hpp"

#include <catch2/catch.hpp>

#include <vector>

using namespace bellows;
using namespace bellows::proto;

namespace {

const std::error_code violation = make_error_code(error::protocol_violation);
const ring_geometry ring16{256, 16};  // 4 KiB, frames of at most 8 slots

frame_header data_header(std::uint32_t length) {
  return frame_header{7, length, frame_kind::data, 0, static_cast<std::uint16_t>(ring16.slots_for(length)), 7};
}

tier_table default_table() { return *tier_table::make(default_tiers()); }

}  // namespace

TEST_CASE("frame header round-trips through its encoding", "[wire]") {
  const frame_header h{0xdeadbeef, 1234, frame_kind::data, 48, 6, 0};
  alignas(8) auto bytes = encode_header(h);
  const frame_header back = read_header(bytes.data());
  CHECK(back.seq == h.seq);
  CHECK(back.length == h.length);
  CHECK(back.kind == h.kind);
  CHECK(back.gap == h.gap);
  CHECK(back.slots == h.slots);
  CHECK(back.seq_again == h.seq);  // written whatever the field held: the header's last word
  CHECK(frame_span(0) == 24);
  CHECK(frame_span(1) == 32);
  CHECK(trailer_offset(9) == 32);
  CHECK(next_seq(0xffffffffu) == 1);
}

TEST_CASE("a well-formed frame header passes validation", "[wire]") {
  CHECK_FALSE(validate_header(data_header(0), ring16, 0));
  CHECK_FALSE(validate_header(data_header(ring16.max_frame_payload()), ring16, 8));
  CHECK_FALSE(validate_header({3, 0, frame_kind::pad, 0, 3, 3}, ring16, 13));
  CHECK_FALSE(validate_header({3, retier_payload_bytes, frame_kind::enlarge_req, 0, 1, 3}, ring16, 2));
  CHECK_FALSE(validate_header({3, 8, frame_kind::frag_first, 0, 1, 3}, ring16, 2));
  auto shifted = data_header(100);
  shifted.gap = max_payload_gap;
  CHECK_FALSE(validate_header(shifted, ring16, 0));
  shifted = data_header(max_payload_gap + 1);
  shifted.gap = max_payload_gap;  // one byte of message
  CHECK_FALSE(validate_header(shifted, ring16, 0));
}

TEST_CASE("every malformed header field is a protocol violation", "[wire]") {
  SECTION("zero sequence") {
    auto h = data_header(10);
    h.seq = 0;
    CHECK(validate_header(h, ring16, 0) == violation);
  }
  SECTION("unknown kind") {
    for (int k : {0, 9, 200, 255}) {
      auto h = data_header(10);
      h.kind = static_cast<frame_kind>(static_cast<std::uint8_t>(k));
      CHECK(validate_header(h, ring16, 0) == violation);
    }
  }
  SECTION("a gap outside DATA, one of a cache line or more, or one that leaves no message") {
    auto h = data_header(100);
    h.gap = max_payload_gap + 1;
    CHECK(validate_header(h, ring16, 0) == violation);
    h.gap = 100;
    CHECK(validate_header(h, ring16, 0) == violation);
    h = data_header(10);
    h.gap = 200;
    CHECK(validate_header(h, ring16, 0) == violation);
    h = {3, 24, frame_kind::frag_first, 8, 1, 3};
    CHECK(validate_header(h, ring16, 0) == violation);
    h = {3, retier_payload_bytes, frame_kind::enlarge_req, 4, 1, 3};
    CHECK(validate_header(h, ring16, 0) == violation);
  }
  SECTION("a last word that does not repeat seq") {
    auto h = data_header(10);
    h.seq_again = h.seq + 0x100;
    CHECK(validate_header(h, ring16, 0) == violation);
  }
  SECTION("length past the ring") {
    auto h = data_header(0);
    h.length = 0xffffffffu;
    CHECK(validate_header(h, ring16, 0) == violation);
    h.length = static_cast<std::uint32_t>(ring16.ring_bytes());
    h.slots = 16;
    CHECK(validate_header(h, ring16, 0) == violation);
  }
  SECTION("frame larger than half the ring") {
    auto h = data_header(ring16.max_frame_payload() + 1);
    CHECK(h.slots == 9);
    CHECK(validate_header(h, ring16, 0) == violation);
  }
  SECTION("wrong slot count") {
    auto h = data_header(1000);
    h.slots = static_cast<std::uint16_t>(h.slots + 1);
    CHECK(validate_header(h, ring16, 0) == violation);
    h.slots = 0;
    CHECK(validate_header(h, ring16, 0) == violation);
  }
  SECTION("frame running off the end of the ring") {
    auto h = data_header(1000);                   // 4 slots
    CHECK_FALSE(validate_header(h, ring16, 12));  // slots 12..15: fits exactly
    CHECK(validate_header(h, ring16, 13) == violation);
    CHECK(validate_header(h, ring16, 16) == violation);
    CHECK(validate_header(h, ring16, 0xffffffffu) == violation);
  }
  SECTION("PAD must carry nothing and end exactly at the ring's end") {
    CHECK(validate_header({3, 8, frame_kind::pad, 0, 3, 0}, ring16, 13) == violation);
    CHECK(validate_header({3, 0, frame_kind::pad, 0, 2, 0}, ring16, 13) == violation);
    CHECK(validate_header({3, 0, frame_kind::pad, 0, 4, 0}, ring16, 13) == violation);
  }
  SECTION("control frames of the wrong size") {
    CHECK(validate_header({3, 8, frame_kind::enlarge_req, 0, 1, 0}, ring16, 0) == violation);
    CHECK(validate_header({3, 24, frame_kind::shrink_req, 0, 1, 0}, ring16, 0) == violation);
    CHECK(validate_header({3, 8, frame_kind::close, 0, 1, 0}, ring16, 0) == violation);
    CHECK(validate_header({3, 4, frame_kind::frag_first, 0, 1, 0}, ring16, 0) == violation);
  }
}

TEST_CASE("trailer is ready only with the frame's seq and must end in zero", "[wire]") {
  alignas(8) std::vector<std::byte> frame(64);
  const frame_header h = data_header(5);
  CHECK_FALSE(check_trailer(frame.data(), h).ready);
  put<std::uint32_t>(frame.data() + trailer_offset(5), h.seq + 1);
  CHECK_FALSE(check_trailer(frame.data(), h).ready);
  put<std::uint32_t>(frame.data() + trailer_offset(5), h.seq);
  CHECK(check_trailer(frame.data(), h).ready);
  CHECK_FALSE(check_trailer(frame.data(), h).ec);
  put<std::uint32_t>(frame.data() + trailer_offset(5) + 4, 1);
  CHECK(check_trailer(frame.data(), h).ec == violation);
}

TEST_CASE("retier payload rejects a zero request id and reserved bits", "[wire]") {
  alignas(8) auto ok = encode_retier({5, 2});
  auto r = decode_retier(ok.data());
  REQUIRE(r);
  CHECK(r->request_id == 5);
  CHECK(r->tier == 2);
  alignas(8) auto zero = encode_retier({0, 2});
  CHECK(decode_retier(zero.data()).failure() == violation);
  put<std::uint32_t>(ok.data() + 12, 1);
  CHECK(decode_retier(ok.data()).failure() == violation);
}

TEST_CASE("tier tables must be valid and ascending", "[wire]") {
  CHECK(tier_table::make(default_tiers()));
  CHECK_FALSE(tier_table::make({}));
  CHECK_FALSE(tier_table::make({{100, 16}}));              // slot size not a power of two
  CHECK_FALSE(tier_table::make({{32, 16}}));               // slot too small for a frame
  CHECK_FALSE(tier_table::make({{256, 1}}));               // a frame needs half a ring
  CHECK_FALSE(tier_table::make({{256, 24}}));              // slot count not a power of two
  CHECK_FALSE(tier_table::make({{4096, 16}, {256, 16}}));  // descending
  CHECK_FALSE(tier_table::make({{256, 16}, {256, 16}}));   // not strictly larger
  const auto t = default_table();
  CHECK(t.max_message(0) == 8 * 256 - 24);
  CHECK(t.smallest_fitting(0) == 0u);
  CHECK(t.smallest_fitting(2024) == 0u);
  CHECK(t.smallest_fitting(2025) == 1u);
  CHECK(t.smallest_fitting(40000) == 2u);  // skips a tier
  CHECK_FALSE(t.smallest_fitting(t.max_message(2) + 1));
}

TEST_CASE("ack slot polling: absent, head without tail, complete, and foreign ids", "[wire]") {
  alignas(64) std::array<std::byte, ack_layout::size> slot{};
  const ack_record granted{3, ack_status::granted, 1, 4096, 0x77, 4096, 16, 1};
  const auto bytes = encode_ack(granted);

  CHECK(poll_ack(slot.data(), 3, 0).status == ack_poll::state::absent);
  std::copy_n(bytes.begin(), 8, slot.begin());  // head only
  CHECK(poll_ack(slot.data(), 3, 0).status == ack_poll::state::in_progress);
  slot = bytes;
  auto p = poll_ack(slot.data(), 3, 0);
  REQUIRE(p.status == ack_poll::state::complete);
  CHECK(p.record.ring_address == 4096);
  CHECK(p.record.epoch == 1);

  SECTION("a head naming a request we never made") { CHECK(poll_ack(slot.data(), 4, 2).ec == violation); }
  SECTION("a tail that is neither old nor new") {
    put<std::uint64_t>(slot.data() + ack_layout::tail, 99);
    CHECK(poll_ack(slot.data(), 3, 0).ec == violation);
  }
  SECTION("reserved bits") {
    put<std::uint32_t>(slot.data() + ack_layout::reserved, 1);
    CHECK(poll_ack(slot.data(), 3, 0).ec == violation);
  }
}

TEST_CASE("ack validation rejects every field that does not match the request", "[wire]") {
  const auto table = default_table();
  const remote_window window{0x77, 4096, 1 << 20};
  const retier_request asked{3, 1};
  const ack_record good{3, ack_status::granted, 1, 4096, 0x77, 4096, 16, 1};
  CHECK_FALSE(validate_ack(good, asked, table, 1, window));

  auto bad = [&](auto mutate) {
    ack_record a = good;
    mutate(a);
    return validate_ack(a, asked, table, 1, window);
  };
  CHECK(bad([](ack_record& a) { a.tier = 7; }) == violation);  // tier out of table
  CHECK(bad([](ack_record& a) { a.tier = 2; }) == violation);  // not the tier asked for
  CHECK(bad([](ack_record& a) { a.status = static_cast<ack_status>(9); }) == violation);
  CHECK(bad([](ack_record& a) { a.slot_size = 8192; }) == violation);
  CHECK(bad([](ack_record& a) { a.slot_count = 32; }) == violation);
  CHECK(bad([](ack_record& a) { a.epoch = 5; }) == violation);
  CHECK(bad([](ack_record& a) { a.ring_key = 0x78; }) == violation);                        // key not granted
  CHECK(bad([](ack_record& a) { a.ring_address = 0; }) == violation);                       // before the window
  CHECK(bad([](ack_record& a) { a.ring_address = (1 << 20) - 4096; }) == violation);        // runs past its end
  CHECK(bad([](ack_record& a) { a.ring_address = ~std::uint64_t{0} - 63; }) == violation);  // wraps around
  CHECK(bad([](ack_record& a) { a.ring_address = 4096 + 8; }) == violation);                // misaligned
  CHECK_FALSE(bad([](ack_record& a) {
    a.status = ack_status::denied;
    a.ring_key = 0;
  }));
}

TEST_CASE("credit word packs an epoch and a count", "[wire]") {
  const auto w = make_credit_word(0x10003, 42);
  CHECK((w >> credit_epoch_shift) == 3);
  CHECK((w & credit_count_mask) == 42);
}
