#pragma once
// The bytes bellows peers exchange: frames in receive rings and the control block.
// Layout and rules are DESIGN.md's "Memory layout and wire format", but for the header byte it
// calls flags, which is now a DATA frame's payload gap (frame_header::gap); everything is
// little-endian and naturally aligned, so the peer's bytes are read in place.

#include "proto/outcome.hpp"
#include "proto/tier_table.hpp"

#include <array>
#include <bit>
#include <cstddef>
#include <cstdint>
#include <system_error>

namespace bellows::proto {

static_assert(std::endian::native == std::endian::little, "the wire format is read in place");

enum class frame_kind : std::uint8_t {
  data = 1,
  frag_first = 2,
  frag_more = 3,
  frag_last = 4,
  pad = 5,
  enlarge_req = 6,
  shrink_req = 7,
  close = 8,
  /// The sender's first frame in a ring it was just granted, when it had nothing else to write
  /// there: tells the receiver the old ring is done (a receiver leaves a ring only when it
  /// finds the next frame in the new one, since a sender whose ack came late went on in the old).
  switched = 9,
  /// A message too large for the largest tier's frames, offered for placement straight into
  /// the receiver's posted buffer (payload: direct_note). The sender waits for the answer in
  /// its lend slot: granted, it writes the message there and then DIRECT_DONE; declined, it
  /// sends the message through the ring as usual. Where the receiver can read the sender's
  /// memory (shm), the payload is a fetch_note instead: the receiver reads the message from the
  /// sender's buffer itself and answers `received`, or declines.
  direct_offer = 10,
  /// The offered message is in the buffer the receiver lent (payload: direct_note).
  direct_done = 11,
};

const char* to_string(frame_kind kind) noexcept;

inline constexpr std::size_t header_bytes = 16;
inline constexpr std::size_t trailer_bytes = 8;
inline constexpr std::size_t frame_overhead = header_bytes + trailer_bytes;
/// ENLARGE_REQ and SHRINK_REQ payload: request id u64, tier u32, reserved u32.
inline constexpr std::uint32_t retier_payload_bytes = 16;
/// DIRECT_OFFER and DIRECT_DONE payload: offer id u64, message length u64.
inline constexpr std::uint32_t direct_payload_bytes = 16;
/// DIRECT_OFFER payload of a message the receiver fetches: a direct_note, then source address
/// u64, guard address u64, guard value u64 (see fetch_note).
inline constexpr std::uint32_t fetch_payload_bytes = 40;
/// FRAG_FIRST starts its payload with the whole message's length as a u64.
inline constexpr std::uint32_t fragment_prefix_bytes = 8;

constexpr std::uint64_t pad8(std::uint64_t n) noexcept { return (n + 7) & ~std::uint64_t{7}; }
/// Offset of the trailer from the start of a frame with this payload length.
constexpr std::uint64_t trailer_offset(std::uint64_t payload_length) noexcept {
  return header_bytes + pad8(payload_length);
}
constexpr std::uint64_t frame_span(std::uint64_t payload_length) noexcept {
  return trailer_offset(payload_length) + trailer_bytes;
}
/// Sequence numbers skip 0 so zeroed memory never looks like a frame.
constexpr std::uint32_t next_seq(std::uint32_t seq) noexcept { return seq + 1 == 0 ? 1 : seq + 1; }

/// A DATA frame's payload may start up to this many bytes after its header (frame_header::gap).
inline constexpr std::uint32_t max_payload_gap = 63;

struct frame_header {
  std::uint32_t seq = 0;
  /// Bytes after the header up to the trailer's padding: a DATA frame's gap, then its message.
  std::uint32_t length = 0;
  frame_kind kind = frame_kind::data;
  /// Unused bytes between the header and a DATA frame's message, counted in `length`; 0 for
  /// every other kind. A sender may shift a message so that it lies at the same offset within
  /// a cache line as the bytes it is copied from: on this project's VM the kernel's copy of a
  /// file into the ring (shm) ran at 60% of its speed when the destination lay 16 bytes ahead.
  std::uint8_t gap = 0;
  std::uint16_t slots = 0;
  /// The header's last word repeats seq; encode_header() writes it whatever this holds. A
  /// provider places a write from its first byte to its last (rdma: Soft-RoCE copies front to
  /// back), so a reader may see seq before the rest of the header: only once this word matches
  /// is the whole header in place.
  std::uint32_t seq_again = 0;
};

std::array<std::byte, header_bytes> encode_header(const frame_header& h) noexcept;
std::array<std::byte, trailer_bytes> encode_trailer(std::uint32_t seq) noexcept;

/// Reads the header at `at`: the head flag (seq) with acquire, the rest after it.
frame_header read_header(const std::byte* at) noexcept;

/// Checks a whole header (seq_again == seq) whose seq matched at ring slot `cursor_slot`: known
/// kind, a gap only on DATA and short of both max_payload_gap and the length, slot count consistent with the length,
/// the frame inside the ring and at most half of it (PAD: exactly the rest of the ring), control payloads of their
/// fixed sizes.
std::error_code validate_header(const frame_header& h, const ring_geometry& ring, std::uint32_t cursor_slot) noexcept;

/// Checks the trailer of a frame whose header passed validate_header; `ready` is false while
/// the tail flag does not yet carry the frame's seq.
struct trailer_state {
  bool ready = false;
  std::error_code ec;
};
trailer_state check_trailer(const std::byte* frame, const frame_header& h) noexcept;

struct retier_request {
  std::uint64_t request_id = 0;
  std::uint32_t tier = 0;
};
std::array<std::byte, retier_payload_bytes> encode_retier(const retier_request& r) noexcept;
/// Rejects a request id of 0 and nonzero reserved bits; tier bounds are the receiver's to check.
outcome<retier_request> decode_retier(const std::byte* payload) noexcept;

struct direct_note {
  std::uint64_t offer_id = 0;
  std::uint64_t length = 0;
};
std::array<std::byte, direct_payload_bytes> encode_direct(const direct_note& n) noexcept;
/// Rejects an offer id of 0 and an empty message.
outcome<direct_note> decode_direct(const std::byte* payload) noexcept;

/// A message the receiver may read straight from the sender's memory. The read counts only if
/// the sender's word at `guard_address` still holds `guard_value` after it: a sender bumps
/// that word before it lets go of an offered buffer, so bytes read after the buffer went back
/// to its application are never delivered (a seqlock's check, with the sender as writer).
struct fetch_note {
  direct_note offer;
  std::uint64_t source = 0;
  std::uint64_t guard_address = 0;
  std::uint64_t guard_value = 0;
};
std::array<std::byte, fetch_payload_bytes> encode_fetch(const fetch_note& n) noexcept;
/// As decode_direct, and rejects a null source or guard.
outcome<fetch_note> decode_fetch(const std::byte* payload) noexcept;

// ---- control block (one per channel per side, written only by the peer) ----

namespace control_block {
inline constexpr std::size_t credit_offset = 0;
inline constexpr std::size_t flags_offset = 8;
inline constexpr std::size_t lend_offset = 16;
inline constexpr std::size_t ack_offset = 64;
/// The id of the last offer whose message is in the buffer the receiver lent for it: a word of
/// its own, so that the answer to the next offer, which may come before it, never hides it.
inline constexpr std::size_t receipt_offset = 120;
inline constexpr std::size_t size = 128;
inline constexpr std::uint64_t pressure_flag = 1;
/// The writer of this word polls the channel on every round of its reactor, so a doorbell for
/// the channel may be skipped where the provider can order the check after the frame (shm).
inline constexpr std::uint64_t polled_flag = 2;
inline constexpr std::uint64_t known_flags = pressure_flag | polled_flag;
}  // namespace control_block

/// credit word = (ring epoch << 48) | slots consumed on that ring, cumulative.
inline constexpr unsigned credit_epoch_shift = 48;
inline constexpr std::uint64_t credit_count_mask = (std::uint64_t{1} << credit_epoch_shift) - 1;
constexpr std::uint64_t make_credit_word(std::uint32_t epoch, std::uint64_t consumed) noexcept {
  return (std::uint64_t{epoch & 0xffffu} << credit_epoch_shift) | (consumed & credit_count_mask);
}

/// `received` is written into a lend slot only, as the whole answer to a fetched offer once the
/// receiver has read it; the send completes on it. A lent buffer's message is acknowledged in
/// the receipt word instead (control_block::receipt_offset), unless its send already completed
/// when the provider took all its bytes (sender::handed_over).
enum class ack_status : std::uint32_t { granted = 1, denied = 2, received = 3 };

struct ack_record {
  std::uint64_t request_id = 0;
  ack_status status = ack_status::denied;
  std::uint32_t tier = 0;
  std::uint64_t ring_address = 0;
  std::uint64_t ring_key = 0;
  std::uint32_t slot_size = 0;
  std::uint32_t slot_count = 0;
  std::uint32_t epoch = 0;
};

namespace ack_layout {
inline constexpr std::size_t head = 0;
inline constexpr std::size_t status = 8;
inline constexpr std::size_t tier = 12;
inline constexpr std::size_t ring_address = 16;
inline constexpr std::size_t ring_key = 24;
inline constexpr std::size_t slot_size = 32;
inline constexpr std::size_t slot_count = 36;
inline constexpr std::size_t epoch = 40;
inline constexpr std::size_t reserved = 44;
inline constexpr std::size_t tail = 48;
inline constexpr std::size_t size = 56;
}  // namespace ack_layout

/// Bytes of an ack slot in the order they must be placed: head first, tail last.
std::array<std::byte, ack_layout::size> encode_ack(const ack_record& a) noexcept;

/// The receiver's answer to a DIRECT_OFFER, in the sender's lend slot: granted with where the
/// message goes (a buffer the receiver lent for this one message), or declined.
struct lend_record {
  std::uint64_t offer_id = 0;
  ack_status status = ack_status::denied;
  std::uint64_t address = 0;
  std::uint64_t key = 0;
  std::uint64_t length = 0;
};

namespace lend_layout {
inline constexpr std::size_t head = 0;
inline constexpr std::size_t status = 8;
inline constexpr std::size_t reserved = 12;
inline constexpr std::size_t address = 16;
inline constexpr std::size_t key = 24;
inline constexpr std::size_t length = 32;
inline constexpr std::size_t tail = 40;
inline constexpr std::size_t size = 48;
}  // namespace lend_layout
static_assert(control_block::lend_offset + lend_layout::size <= control_block::ack_offset);
static_assert(control_block::ack_offset + ack_layout::size <= control_block::receipt_offset);

/// Bytes of a lend slot in the order they must be placed: head first, tail last.
std::array<std::byte, lend_layout::size> encode_lend(const lend_record& r) noexcept;

/// What polling a slot bracketed by head and tail flags (an ack, a lend answer) found.
template <class Record>
struct slot_poll {
  enum class state { absent, in_progress, complete } status = state::absent;
  Record record;
  std::error_code ec;
};

/// Polls the lend slot for offer `expected`; `previous` is the last offer answered (0: none).
using lend_poll = slot_poll<lend_record>;
lend_poll poll_lend(const std::byte* slot, std::uint64_t expected, std::uint64_t previous) noexcept;

/// The region a peer granted us for its rings: shm arena bounds, or an RDMA key and range.
/// With `any_key` (RDMA, where every ring is a registration with its own key) only the range
/// is checked here; the peer's device refuses a write outside what the key covers.
struct remote_window {
  std::uint64_t key = 0;
  std::uint64_t begin = 0;
  std::uint64_t end = 0;
  bool any_key = false;
  bool contains(std::uint64_t k, std::uint64_t address, std::uint64_t length) const noexcept {
    return (any_key || k == key) && address >= begin && address <= end && length <= end - address;
  }
};

/// Polls an ack slot for request `expected`. `previous` is the last request id whose ack was
/// consumed (0 for none): that is what an unwritten slot still holds.
using ack_poll = slot_poll<ack_record>;
ack_poll poll_ack(const std::byte* slot, std::uint64_t expected, std::uint64_t previous) noexcept;

/// Validates a complete ack against the request it answers: the tier asked for, its geometry
/// from the table, the next ring epoch, and a ring lying wholly inside the granted window.
std::error_code validate_ack(const ack_record& a, const retier_request& asked, const tier_table& tiers,
                             std::uint32_t expected_epoch, const remote_window& granted) noexcept;

}  // namespace bellows::proto
