#include "proto/wire.hpp"

#include "proto/shared_access.hpp"

#include <algorithm>

namespace bellows::proto {
namespace {

std::error_code violation() noexcept { return make_error_code(error::protocol_violation); }

bool is_known_kind(frame_kind kind) noexcept {
  auto k = static_cast<std::uint8_t>(kind);
  return k >= static_cast<std::uint8_t>(frame_kind::data) && k <= static_cast<std::uint8_t>(frame_kind::direct_done);
}

/// The flags of a bracketed slot: nothing new while the head still holds `previous`; the
/// record is whole once the tail too says `expected`; any other value is a lie.
template <class Record>
slot_poll<Record> poll_flags(const std::byte* slot, std::size_t tail_offset, std::uint64_t expected,
                             std::uint64_t previous) noexcept {
  slot_poll<Record> result;
  const auto head = load_acquire<std::uint64_t>(slot);
  if (head == previous) return result;
  const auto tail = load_acquire<std::uint64_t>(slot + tail_offset);
  if (head != expected || (tail != previous && tail != expected)) {
    result.ec = violation();
  } else {
    // Head seen, tail not yet: the peer's write is still being placed.
    result.status = tail == previous ? slot_poll<Record>::state::in_progress : slot_poll<Record>::state::complete;
  }
  return result;
}

}  // namespace

const char* to_string(frame_kind kind) noexcept {
  switch (kind) {
    case frame_kind::data: return "DATA";
    case frame_kind::frag_first: return "FRAG_FIRST";
    case frame_kind::frag_more: return "FRAG_MORE";
    case frame_kind::frag_last: return "FRAG_LAST";
    case frame_kind::pad: return "PAD";
    case frame_kind::enlarge_req: return "ENLARGE_REQ";
    case frame_kind::shrink_req: return "SHRINK_REQ";
    case frame_kind::close: return "CLOSE";
    case frame_kind::switched: return "SWITCHED";
    case frame_kind::direct_offer: return "DIRECT_OFFER";
    case frame_kind::direct_done: return "DIRECT_DONE";
  }
  return "UNKNOWN";
}

std::array<std::byte, header_bytes> encode_header(const frame_header& h) noexcept {
  std::array<std::byte, header_bytes> out{};
  put(out.data() + 0, h.seq);
  put(out.data() + 4, h.length);
  put(out.data() + 8, static_cast<std::uint8_t>(h.kind));
  put(out.data() + 9, h.gap);
  put(out.data() + 10, h.slots);
  put(out.data() + 12, h.seq);
  return out;
}

std::array<std::byte, trailer_bytes> encode_trailer(std::uint32_t seq) noexcept {
  std::array<std::byte, trailer_bytes> out{};
  put(out.data(), seq);
  return out;
}

frame_header read_header(const std::byte* at) noexcept {
  frame_header h;
  h.seq = load_acquire<std::uint32_t>(at);
  h.length = load_relaxed<std::uint32_t>(at + 4);
  h.kind = static_cast<frame_kind>(load_relaxed<std::uint8_t>(at + 8));
  h.gap = load_relaxed<std::uint8_t>(at + 9);
  h.slots = load_relaxed<std::uint16_t>(at + 10);
  h.seq_again = load_relaxed<std::uint32_t>(at + 12);
  return h;
}

std::error_code validate_header(const frame_header& h, const ring_geometry& ring, std::uint32_t cursor_slot) noexcept {
  if (h.seq == 0 || !is_known_kind(h.kind) || h.seq_again != h.seq) return violation();
  if (h.gap != 0 && (h.kind != frame_kind::data || h.gap > max_payload_gap || h.gap >= h.length)) return violation();
  if (h.slots == 0 || cursor_slot >= ring.slot_count || h.slots > ring.slot_count - cursor_slot) return violation();
  if (h.kind == frame_kind::pad) {
    // PAD carries nothing: it only moves the cursor to the start of the ring.
    if (h.length != 0 || cursor_slot + h.slots != ring.slot_count) return violation();
    return {};
  }
  if (h.slots > ring.max_frame_slots() || h.slots != ring.slots_for(h.length)) return violation();
  switch (h.kind) {
    case frame_kind::enlarge_req:
    case frame_kind::shrink_req:
      if (h.length != retier_payload_bytes) return violation();
      break;
    case frame_kind::direct_offer:
      if (h.length != direct_payload_bytes && h.length != fetch_payload_bytes) return violation();
      break;
    case frame_kind::direct_done:
      if (h.length != direct_payload_bytes) return violation();
      break;
    case frame_kind::close:
    case frame_kind::switched:
      if (h.length != 0) return violation();
      break;
    case frame_kind::frag_first:
      if (h.length < fragment_prefix_bytes) return violation();
      break;
    default: break;
  }
  return {};
}

trailer_state check_trailer(const std::byte* frame, const frame_header& h) noexcept {
  const std::byte* trailer = frame + trailer_offset(h.length);
  if (load_acquire<std::uint32_t>(trailer) != h.seq) return {};
  if (load_relaxed<std::uint32_t>(trailer + 4) != 0) return {true, violation()};
  return {true, {}};
}

std::array<std::byte, retier_payload_bytes> encode_retier(const retier_request& r) noexcept {
  std::array<std::byte, retier_payload_bytes> out{};
  put(out.data(), r.request_id);
  put(out.data() + 8, r.tier);
  return out;
}

outcome<retier_request> decode_retier(const std::byte* payload) noexcept {
  retier_request r;
  r.request_id = load_relaxed<std::uint64_t>(payload);
  r.tier = load_relaxed<std::uint32_t>(payload + 8);
  if (r.request_id == 0 || load_relaxed<std::uint32_t>(payload + 12) != 0) return error::protocol_violation;
  return r;
}

std::array<std::byte, direct_payload_bytes> encode_direct(const direct_note& n) noexcept {
  std::array<std::byte, direct_payload_bytes> out{};
  put(out.data(), n.offer_id);
  put(out.data() + 8, n.length);
  return out;
}

outcome<direct_note> decode_direct(const std::byte* payload) noexcept {
  direct_note n;
  n.offer_id = load_relaxed<std::uint64_t>(payload);
  n.length = load_relaxed<std::uint64_t>(payload + 8);
  if (n.offer_id == 0 || n.length == 0) return error::protocol_violation;
  return n;
}

std::array<std::byte, fetch_payload_bytes> encode_fetch(const fetch_note& n) noexcept {
  std::array<std::byte, fetch_payload_bytes> out{};
  const auto offer = encode_direct(n.offer);
  std::copy(offer.begin(), offer.end(), out.begin());
  put(out.data() + 16, n.source);
  put(out.data() + 24, n.guard_address);
  put(out.data() + 32, n.guard_value);
  return out;
}

outcome<fetch_note> decode_fetch(const std::byte* payload) noexcept {
  const auto offer = decode_direct(payload);
  if (!offer) return offer.failure();
  fetch_note n{*offer, load_relaxed<std::uint64_t>(payload + 16), load_relaxed<std::uint64_t>(payload + 24),
               load_relaxed<std::uint64_t>(payload + 32)};
  if (n.source == 0 || n.guard_address == 0) return error::protocol_violation;
  return n;
}

std::array<std::byte, lend_layout::size> encode_lend(const lend_record& r) noexcept {
  std::array<std::byte, lend_layout::size> out{};
  put(out.data() + lend_layout::head, r.offer_id);
  put(out.data() + lend_layout::status, static_cast<std::uint32_t>(r.status));
  put(out.data() + lend_layout::address, r.address);
  put(out.data() + lend_layout::key, r.key);
  put(out.data() + lend_layout::length, r.length);
  put(out.data() + lend_layout::tail, r.offer_id);
  return out;
}

lend_poll poll_lend(const std::byte* slot, std::uint64_t expected, std::uint64_t previous) noexcept {
  lend_poll result = poll_flags<lend_record>(slot, lend_layout::tail, expected, previous);
  if (result.status != lend_poll::state::complete) return result;
  lend_record& r = result.record;
  r.offer_id = expected;
  r.status = static_cast<ack_status>(load_relaxed<std::uint32_t>(slot + lend_layout::status));
  r.address = load_relaxed<std::uint64_t>(slot + lend_layout::address);
  r.key = load_relaxed<std::uint64_t>(slot + lend_layout::key);
  r.length = load_relaxed<std::uint64_t>(slot + lend_layout::length);
  if (load_relaxed<std::uint32_t>(slot + lend_layout::reserved) != 0 ||
      (r.status != ack_status::granted && r.status != ack_status::denied && r.status != ack_status::received)) {
    result.status = lend_poll::state::absent;
    result.ec = violation();
  }
  return result;
}

std::array<std::byte, ack_layout::size> encode_ack(const ack_record& a) noexcept {
  std::array<std::byte, ack_layout::size> out{};
  put(out.data() + ack_layout::head, a.request_id);
  put(out.data() + ack_layout::status, static_cast<std::uint32_t>(a.status));
  put(out.data() + ack_layout::tier, a.tier);
  put(out.data() + ack_layout::ring_address, a.ring_address);
  put(out.data() + ack_layout::ring_key, a.ring_key);
  put(out.data() + ack_layout::slot_size, a.slot_size);
  put(out.data() + ack_layout::slot_count, a.slot_count);
  put(out.data() + ack_layout::epoch, a.epoch);
  put(out.data() + ack_layout::tail, a.request_id);
  return out;
}

ack_poll poll_ack(const std::byte* slot, std::uint64_t expected, std::uint64_t previous) noexcept {
  ack_poll result = poll_flags<ack_record>(slot, ack_layout::tail, expected, previous);
  if (result.status != ack_poll::state::complete) return result;
  ack_record& a = result.record;
  a.request_id = expected;
  a.status = static_cast<ack_status>(load_relaxed<std::uint32_t>(slot + ack_layout::status));
  a.tier = load_relaxed<std::uint32_t>(slot + ack_layout::tier);
  a.ring_address = load_relaxed<std::uint64_t>(slot + ack_layout::ring_address);
  a.ring_key = load_relaxed<std::uint64_t>(slot + ack_layout::ring_key);
  a.slot_size = load_relaxed<std::uint32_t>(slot + ack_layout::slot_size);
  a.slot_count = load_relaxed<std::uint32_t>(slot + ack_layout::slot_count);
  a.epoch = load_relaxed<std::uint32_t>(slot + ack_layout::epoch);
  if (load_relaxed<std::uint32_t>(slot + ack_layout::reserved) != 0) {
    result.status = ack_poll::state::absent;
    result.ec = violation();
  }
  return result;
}

std::error_code validate_ack(const ack_record& a, const retier_request& asked, const tier_table& tiers,
                             std::uint32_t expected_epoch, const remote_window& granted) noexcept {
  if (a.request_id != asked.request_id || a.tier != asked.tier || a.tier >= tiers.size()) return violation();
  if (a.status == ack_status::denied) return {};
  if (a.status != ack_status::granted) return violation();
  const ring_geometry& g = tiers[a.tier];
  if (a.slot_size != g.slot_size || a.slot_count != g.slot_count || a.epoch != expected_epoch) return violation();
  if (a.ring_address % 64 != 0 || !granted.contains(a.ring_key, a.ring_address, g.ring_bytes())) return violation();
  return {};
}

}  // namespace bellows::proto
