#pragma once
// What the channel core asks its driver to do, as a flat list in the order it must happen. The
// driver carries each out without knowing the wire: the bytes of a `place` are laid out already
// and a frame's trailer is a `place` of its own that comes after the rest of the frame.

#include "proto/direction.hpp"
#include "proto/receiver.hpp"
#include "proto/step.hpp"

#include <bellows/detail/byte_ranges.hpp>
#include <bellows/tier_event.hpp>

#include <algorithm>
#include <array>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <system_error>
#include <variant>
#include <vector>

namespace bellows::proto {

/// Copies `prefix` then bytes [source_offset, source_offset + source_length) of `source` to
/// `address` under `key` in the peer's registered memory, as one write; then, for a frame, its
/// `trailer` to `trailer_address` as a second write, which must become visible after the first.
struct place {
  /// Leaves prefix_bytes uninitialized: only the first prefix_length bytes are ever read.
  place() noexcept {}  // NOLINT: a user-provided constructor, so value-initialization skips zeroing

  std::uint64_t key = 0;
  std::uint64_t address = 0;
  /// A frame's header and inline payload (a fetched DIRECT_OFFER's) or a DATA frame's zeroed gap,
  /// whichever is longer, or an ack's body.
  std::array<std::byte, header_bytes + std::max(fetch_payload_bytes, max_payload_gap)> prefix_bytes;
  std::uint32_t prefix_length = 0;
  gather_list source;
  std::uint64_t source_offset = 0;
  std::uint64_t source_length = 0;
  std::uint64_t trailer_address = 0;
  std::array<std::byte, 8> trailer_bytes;
  bool has_trailer = false;
  /// Set for a message's bytes written into a buffer the receiver lent: its send completes only
  /// once they left or on the receiver's receipt, so `source` stays valid until the send_done
  /// whose ranges' parts() lie here, and the provider may go on sending from it until then.
  const void* held_until_done = nullptr;

  std::span<const std::byte> prefix() const noexcept { return {prefix_bytes.data(), prefix_length}; }
  std::span<const std::byte> trailer() const noexcept { return trailer_bytes; }
};

/// Tell the peer's reactor that this channel has something for it, unless `*peer_polls & mask`:
/// the peer said it polls the channel on every round. A driver may skip the doorbell only if
/// it can make that check after the writes it announces are visible to the peer (shm), since
/// the peer clears the flag, then looks once more before it stops polling.
struct ring_doorbell {
  const std::uint64_t* peer_polls = nullptr;  ///< in our memory, written by the peer
  std::uint64_t mask = 0;
};

/// Register a zeroed ring of `bytes` for the peer and answer with channel_core::provisioned.
struct provision {
  provision_request request;
  std::uint64_t bytes = 0;
};

/// Lend `memory`, a posted receive's buffer, to the peer for the message of DIRECT_OFFER
/// `offer_id`, and answer with channel_core::lent (lent or not). Until the region is released
/// only that peer's writes for this offer may land in it.
struct lend_buffer {
  std::uint64_t offer_id = 0;
  std::span<std::byte> memory;
};

/// Read the message of DIRECT_OFFER `offer_id` from the peer's memory into `into`, a posted
/// receive's buffer, and answer with channel_core::fetched: whether the read succeeded and the
/// peer's guard word still held `guard_value` after it (fetch_note).
struct fetch_message {
  std::uint64_t offer_id = 0;
  std::uint64_t source = 0;
  std::uint64_t guard_address = 0;
  std::uint64_t guard_value = 0;
  std::span<std::byte> into;
};

/// Ask the provider whether the message just written into the peer's lent buffer for DIRECT_OFFER
/// `offer_id` (and its DIRECT_DONE) has left this process, and tell channel_core::handed_over.
/// Carried out after the writes and the doorbell that follow them.
struct check_handover {
  std::uint64_t offer_id = 0;
};

/// A provider registration this channel no longer references.
struct release_region {
  std::uint64_t region = 0;
};

/// The error of an operation the application cancelled; a driver reports it in its framework's
/// terms (Asio: asio::error::operation_aborted).
inline std::error_code cancelled() { return std::make_error_code(std::errc::operation_canceled); }

struct send_done {
  std::uint64_t id = 0;
  std::error_code ec;
  std::uint64_t bytes = 0;
  /// The send's range list, kept alive until this action: `place` actions before it read it.
  std::unique_ptr<detail::gather> ranges;
};

struct receive_done {
  std::uint64_t id = 0;
  std::error_code ec;
  std::uint64_t bytes = 0;
};

/// A message handed over without a copy (`bytes` lie in the ring until `token` is released) or,
/// when it came in fragments, assembled into `assembled`.
struct view_done {
  std::uint64_t id = 0;
  std::error_code ec;
  frame_token token;
  std::span<const std::byte> bytes;
  std::vector<std::byte> assembled;
  bool zero_copy = false;
};

struct close_done {
  std::uint64_t id = 0;
  std::error_code ec;
};

struct tier_changed {
  tier_event event;
};

struct reached {
  proto::step step;
};

/// Tell the peer we will not write into its memory again; its memory may go.
struct detach {};

using action = std::variant<place, ring_doorbell, provision, lend_buffer, fetch_message, check_handover, release_region,
                            send_done, receive_done, view_done, close_done, tier_changed, reached, detach>;

}  // namespace bellows::proto
