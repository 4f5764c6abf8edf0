#pragma once
// Types shared by the two halves of a channel direction: options, time, and the rings.

#include "proto/tier_table.hpp"

#include <bellows/detail/byte_ranges.hpp>

#include <algorithm>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <span>

namespace bellows::proto {

/// Time as the driver sees it; the core never reads a clock, which keeps it deterministic.
using clock_time = std::chrono::nanoseconds;

struct direction_options {
  tier_table tiers;
  /// How long a send waits for the acknowledgement of an enlargement or shrink.
  std::chrono::nanoseconds ack_timeout = std::chrono::seconds(1);
  /// Shrink back to the first tier after this long without a message larger than it.
  std::chrono::nanoseconds idle_shrink_after = std::chrono::seconds(5);
  /// After a denial, messages are fragmented without asking again for this long.
  std::chrono::nanoseconds retry_after_denial = std::chrono::milliseconds(100);
  /// Largest message either side accepts; a FRAG_FIRST announcing more is a violation.
  std::uint64_t max_message_size = std::uint64_t{1} << 40;
  /// Messages longer than this are offered for placement straight into the receiver's posted
  /// buffer (DIRECT_OFFER) before they are fragmented through the ring; 0: never. Set from
  /// channel_options::one_copy_above where the provider can place them (reactor/channel_state.cpp).
  std::uint64_t offer_direct_above = 0;
  /// Offers name the sender's buffer and the receiver reads the message from there itself
  /// (fetch_note) instead of lending its own buffer. Set where the peer can read this process's
  /// memory (shm, process_vm_readv); only a message in one contiguous range is offered then.
  bool offers_are_fetched = false;
};

/// A ring in the peer's memory that this side writes frames into.
struct remote_ring {
  std::uint64_t key = 0;
  std::uint64_t address = 0;
  std::uint32_t tier = 0;
  std::uint32_t epoch = 0;
};

/// A ring in local memory that the peer writes into.
struct local_ring {
  std::uint64_t region = 0;  ///< provider handle, returned when the ring is released
  std::uint64_t key = 0;
  std::uint64_t address = 0;
  /// Written by the receiver too: it clears the slots it consumed (see receiver.cpp).
  std::byte* base = nullptr;
  std::uint32_t tier = 0;
  std::uint32_t epoch = 0;
};

/// A message to send as a list of byte ranges that the caller keeps alive until completion.
struct gather_list {
  std::span<const std::span<const std::byte>> parts;
  std::uint64_t length = 0;
  /// When it names a file, `parts` is empty and byte i of the message is byte
  /// `file.offset + i` of the file, read as frames are placed.
  detail::file_range file;
};

/// Calls `fn(span)` for each piece of bytes [offset, offset + length) of the message.
template <class Fn>
void for_each_piece(const gather_list& message, std::uint64_t offset, std::uint64_t length, Fn&& fn) {
  for (auto part : message.parts) {
    if (length == 0) return;
    if (offset >= part.size()) {
      offset -= part.size();
      continue;
    }
    auto take = std::min<std::uint64_t>(length, part.size() - offset);
    fn(part.subspan(offset, take));
    offset = 0;
    length -= take;
  }
}

}  // namespace bellows::proto
