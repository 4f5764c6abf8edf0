#pragma once
// Receive-ring tiers: the sizes a channel direction may grow through.

#include <cstdint>
#include <vector>

namespace bellows {

/// One receive-ring size. Both fields are powers of two; slot_size is at least 64 bytes and
/// slot_count at least 2. A tier's largest single frame fills half of its ring.
struct tier {
  std::uint32_t slot_size = 0;   ///< bytes per slot; a frame occupies whole slots
  std::uint32_t slot_count = 0;  ///< slots in the ring

  /// The ring's size: what a receive ring of this tier registers.
  constexpr std::uint64_t ring_bytes() const noexcept { return std::uint64_t{slot_size} * slot_count; }
  /// Same slot size and count.
  friend constexpr bool operator==(const tier&, const tier&) = default;
};

/// The default table: 16 x 256 B (4 KiB, where every channel starts), 16 x 4 KiB (64 KiB) and
/// 16 x 64 KiB (1 MiB). Messages larger than the last tier's largest frame are fragmented.
inline std::vector<tier> default_tiers() { return {{256, 16}, {4096, 16}, {65536, 16}}; }

}  // namespace bellows
