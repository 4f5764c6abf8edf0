// The frame decoder: a header and frame body of arbitrary bytes at an arbitrary slot of a ring
// of each tier. A header that validates describes a frame lying wholly inside the ring (the ring
// is a heap block of exactly its size, so reading its trailer out of bounds would be seen), and
// decoding the same bytes twice gives the same answer.
#include "fuzz/script.hpp"
#include "proto/shared_access.hpp"
#include "proto/wire.hpp"

#include <cstring>
#include <memory>
#include <stdexcept>

using namespace bellows::proto;

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  bellows::fuzz::script in(data, size);
  static const tier_table tiers = *tier_table::make(bellows::default_tiers());
  const auto& ring = tiers[in.take<std::uint8_t>() % tiers.size()];
  const std::uint32_t cursor = in.take<std::uint8_t>() % ring.slot_count;
  const std::uint64_t offset = std::uint64_t{cursor} * ring.slot_size;

  // Half of the inputs get the slot count their length implies, so that the fuzzer reaches
  // frames that pass the consistency check without having to solve it.
  const bool consistent_slots = in.take<std::uint8_t>() % 2 == 1;
  auto memory = std::make_unique<std::byte[]>(ring.ring_bytes());
  std::memset(memory.get(), 0, ring.ring_bytes());
  std::size_t length = 0;
  const std::uint8_t* body = in.rest(length);
  std::memcpy(memory.get() + offset, body, std::min<std::uint64_t>(length, ring.ring_bytes() - offset));
  if (consistent_slots && ring.ring_bytes() - offset >= header_bytes) {
    const auto slots =
        std::min<std::uint64_t>(ring.slots_for(load_relaxed<std::uint32_t>(memory.get() + offset + 4)), 0xffff);
    put<std::uint16_t>(memory.get() + offset + 10, static_cast<std::uint16_t>(slots));
    // A whole header, so that the rest of it is what gets explored.
    put<std::uint32_t>(memory.get() + offset + 12, load_relaxed<std::uint32_t>(memory.get() + offset));
  }
  const std::byte* frame = memory.get() + offset;

  const frame_header h = read_header(frame);
  const auto ec = validate_header(h, ring, cursor);
  if (ec != validate_header(read_header(frame), ring, cursor)) throw std::logic_error("validation is not a function");
  if (ec) {
    if (ec != bellows::error::protocol_violation) throw std::logic_error("a rejection other than protocol_violation");
    return 0;
  }
  const std::uint64_t covered = std::uint64_t{h.slots} * ring.slot_size;
  if (offset + covered > ring.ring_bytes()) throw std::logic_error("a valid frame runs past the ring");
  if (h.kind == frame_kind::pad) return 0;
  if (frame_span(h.length) > covered) throw std::logic_error("a valid frame is longer than its slots");
  if (h.slots > ring.max_frame_slots()) throw std::logic_error("a valid frame is over half the ring");
  const auto trailer = check_trailer(frame, h);
  if (trailer.ec && trailer.ec != bellows::error::protocol_violation) throw std::logic_error("odd trailer error");
  if (h.kind == frame_kind::enlarge_req || h.kind == frame_kind::shrink_req) {
    const auto r = decode_retier(frame + header_bytes);
    if (r && r->request_id == 0) throw std::logic_error("a retier request with id 0 decoded");
  }
  return 0;
}
