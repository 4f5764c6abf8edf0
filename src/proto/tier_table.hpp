#pragma once
// The validated, ascending table of ring sizes a direction can move through.

#include "proto/outcome.hpp"

#include <bellows/tier.hpp>

#include <cstddef>
#include <cstdint>
#include <optional>
#include <vector>

namespace bellows::proto {

inline constexpr std::uint32_t min_slot_size = 64;
inline constexpr std::uint32_t min_slot_count = 2;
inline constexpr std::size_t max_tiers = 16;

/// Geometry of one ring; every value here was validated by tier_table::make.
struct ring_geometry {
  std::uint32_t slot_size = 0;
  std::uint32_t slot_count = 0;

  std::uint64_t ring_bytes() const noexcept { return std::uint64_t{slot_size} * slot_count; }
  /// Frames never exceed half the ring, which is what keeps credit returns deadlock-free.
  std::uint32_t max_frame_slots() const noexcept { return slot_count / 2; }
  std::uint32_t max_frame_payload() const noexcept;
  /// Slots a non-PAD frame with this payload length occupies.
  std::uint64_t slots_for(std::uint64_t payload_length) const noexcept;
  friend bool operator==(const ring_geometry&, const ring_geometry&) = default;
};

bool is_valid_tier(const tier& t) noexcept;

class tier_table {
 public:
  /// Rejects an empty table, a malformed tier and any tier not strictly larger than the one before.
  static outcome<tier_table> make(std::vector<tier> tiers);

  std::size_t size() const noexcept { return geometries_.size(); }
  const ring_geometry& operator[](std::size_t index) const { return geometries_[index]; }
  /// Largest message carried by one DATA frame of the tier.
  std::uint64_t max_message(std::size_t index) const { return geometries_[index].max_frame_payload(); }
  /// The smallest tier whose single frame holds `length` bytes, if any does.
  std::optional<std::size_t> smallest_fitting(std::uint64_t length) const noexcept;
  std::size_t largest() const noexcept { return geometries_.size() - 1; }

 private:
  std::vector<ring_geometry> geometries_;
};

}  // namespace bellows::proto
