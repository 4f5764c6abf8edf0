#include "proto/tier_table.hpp"

#include "proto/wire.hpp"

#include <bit>

namespace bellows::proto {

std::uint32_t ring_geometry::max_frame_payload() const noexcept {
  return max_frame_slots() * slot_size - static_cast<std::uint32_t>(frame_overhead);
}

std::uint64_t ring_geometry::slots_for(std::uint64_t payload_length) const noexcept {
  return (frame_span(payload_length) + slot_size - 1) / slot_size;
}

bool is_valid_tier(const tier& t) noexcept {
  return std::has_single_bit(t.slot_size) && t.slot_size >= min_slot_size && std::has_single_bit(t.slot_count) &&
         t.slot_count >= min_slot_count && t.slot_count <= 65536 && t.ring_bytes() <= (std::uint64_t{1} << 31);
}

outcome<tier_table> tier_table::make(std::vector<tier> tiers) {
  if (tiers.empty() || tiers.size() > max_tiers) return error::invalid_argument;
  tier_table table;
  std::uint32_t previous_payload = 0;
  for (const tier& t : tiers) {
    if (!is_valid_tier(t)) return error::invalid_argument;
    ring_geometry g{t.slot_size, t.slot_count};
    if (g.max_frame_payload() <= previous_payload) return error::invalid_argument;
    previous_payload = g.max_frame_payload();
    table.geometries_.push_back(g);
  }
  return table;
}

std::optional<std::size_t> tier_table::smallest_fitting(std::uint64_t length) const noexcept {
  for (std::size_t i = 0; i < geometries_.size(); ++i)
    if (length <= max_message(i)) return i;
  return std::nullopt;
}

}  // namespace bellows::proto
