#pragma once
// Where a large payload starts in the stream, so that the kernel copies it at full speed.
//
// The sending kernel copies a payload from the caller's memory into its socket buffer pages, and
// over loopback the receiving kernel copies it from those same pages into the ring or the lent
// receive buffer. A copy whose destination lies a little ahead of its source within a 4 KiB
// page runs at a fraction of its speed: each load looks like it may depend on a store just made
// (only the low 12 address bits are compared at first), and waits for it. Measured on this
// project's VM (AMD EPYC), 1 MiB streamed from a buffer at page offset 16 (where malloc puts a
// large block) at 4.3 GB/s, from offset 256 at 6.5 GB/s, with the payload behind a 32-byte
// record header; see README "Over TCP".
//
// The page offset a payload lands at in the sending kernel's buffers is not known for sure. When
// the previous message's buffers have all been acknowledged and read, the kernel starts its page
// again at offset 0, so the payload lands after the bytes this send puts ahead of it; that is
// the common case when one large message follows another, and the only one this aims at. A
// padding record in front moves the payload to an offset clear of both copies' bad windows.

#include "fabric/tcp/record.hpp"

#include <cstddef>
#include <cstdint>

namespace bellows::tcp {

inline constexpr std::uint64_t page_bytes = 4096;
/// A copy whose destination is this little ahead of its source, within a page, is the slow
/// case. Measured slow from 8 to 48 bytes ahead, fast at 0 and from 64 on: twice that, for
/// other processors' store buffers.
inline constexpr std::uint64_t copy_aliasing_window = 128;

/// Whether a copy from page offset `from` to page offset `to` is the slow case.
constexpr bool copy_aliases(std::uint64_t from, std::uint64_t to) noexcept {
  const std::uint64_t ahead = (to - from) & (page_bytes - 1);
  return ahead != 0 && ahead < copy_aliasing_window;
}

/// Bytes of padding record (0, or a header and at least one byte) to send ahead of a payload
/// that would land at page offset `lands_at` in the socket's buffers, coming from page offset
/// `source` in the sender's memory and going to page offset `destination` in the receiver's
/// (each may be given as a whole address or stream position: only its offset in a page counts).
constexpr std::uint64_t padding_before(std::uint64_t lands_at, std::uint64_t source,
                                       std::uint64_t destination) noexcept {
  const auto clear = [&](std::uint64_t at) { return !copy_aliases(source, at) && !copy_aliases(at, destination); };
  if (clear(lands_at)) return 0;
  // Each window rules out fewer than copy_aliasing_window offsets, so one step past both is
  // clear; the bound is only a bound.
  constexpr std::uint64_t step = 16;
  for (std::uint64_t pad = sizeof(record_header) + step; pad < sizeof(record_header) + page_bytes; pad += step)
    if (clear(lands_at + pad)) return pad;
  return 0;
}

}  // namespace bellows::tcp
