// The receiver state machine fed whatever a lying peer may leave in its rings. The input is a
// script: well-formed frames at the place an honest sender would put them, raw bytes anywhere in
// the ring, polls, releases and provisioning answers. Whatever the script, the receiver must not
// read outside its rings (each is a heap block of exactly its size, so ASan sees a stray read),
// must hand out only payloads that lie inside a live ring, and once failed must stay failed.
#include "fuzz/script.hpp"
#include "proto/receiver.hpp"
#include "proto/shared_access.hpp"

#include <algorithm>
#include <cstring>
#include <deque>
#include <memory>
#include <stdexcept>
#include <vector>

using namespace bellows::proto;

namespace {

// Rings above this size are denied, a legitimate answer, so that one input stays fast.
constexpr std::uint64_t largest_granted_ring = 1 << 20;

struct ring_memory {
  std::unique_ptr<std::byte[]> bytes;
  std::uint64_t size = 0;
  bool contains(std::span<const std::byte> s) const {
    return s.data() >= bytes.get() && s.data() + s.size() <= bytes.get() + size;
  }
};

class harness {
 public:
  harness() : rx_(options(), first_ring()) {}

  void run(bellows::fuzz::script& in) {
    for (int step = 0; step < 4096 && !in.empty(); ++step) {
      switch (in.take<std::uint8_t>() % 7) {
        case 0: write_frame(in); break;
        case 1: write_raw(in); break;
        case 2: poll(); break;
        case 3: release(in.take<std::uint8_t>()); break;
        case 4: provision(in.take<std::uint8_t>()); break;
        case 5: pressure(in.take<std::uint8_t>() & 1); break;
        case 6: move_to_granted(); break;
      }
    }
    poll();
  }

 private:
  static direction_options options() {
    direction_options o{*tier_table::make(bellows::default_tiers())};
    o.max_message_size = 1 << 24;
    return o;
  }

  local_ring first_ring() {
    rings_.push_back(allocate(options().tiers[0].ring_bytes()));
    return local_ring{1, 1, 0, rings_.back().bytes.get(), 0, 0};
  }

  static ring_memory allocate(std::uint64_t size) {
    ring_memory r{std::make_unique<std::byte[]>(size), size};
    std::memset(r.bytes.get(), 0, size);
    return r;
  }

  ring_memory& writing() { return rings_[writing_ring_]; }
  const ring_geometry& geometry() const { return rx_.options().tiers[writing_tier_]; }

  // A frame where an honest sender would place it next: header, payload, trailer.
  void write_frame(bellows::fuzz::script& in) {
    const auto kind = static_cast<frame_kind>(1 + in.take<std::uint8_t>() % 11);
    const auto& g = geometry();
    std::uint32_t length = in.take<std::uint16_t>() % (g.max_frame_payload() + 1);
    std::array<std::byte, fetch_payload_bytes> control{};
    if (kind == frame_kind::enlarge_req || kind == frame_kind::shrink_req) {
      const auto request = encode_retier({in.take<std::uint64_t>() % 8, in.take<std::uint8_t>() % 6u});
      std::copy(request.begin(), request.end(), control.begin());
      length = retier_payload_bytes;
    } else if (kind == frame_kind::close || kind == frame_kind::switched) {
      length = 0;
    } else if (kind == frame_kind::direct_offer || kind == frame_kind::direct_done) {
      const direct_note offer{in.take<std::uint8_t>() % 8u, in.take<std::uint32_t>()};
      const auto note = encode_direct(offer);
      std::copy(note.begin(), note.end(), control.begin());
      length = direct_payload_bytes;
      if (kind == frame_kind::direct_offer && in.take<std::uint8_t>() % 2 == 0) {
        // An offer to fetch; a null source or guard is a lie the receiver must refuse.
        const auto fetch = encode_fetch({offer, in.take<std::uint8_t>() % 2u, in.take<std::uint8_t>() % 2u * 8, 0});
        std::copy(fetch.begin(), fetch.end(), control.begin());
        length = fetch_payload_bytes;
      }
    }
    const std::uint32_t slots_left = g.slot_count - write_slot_;
    auto slots = static_cast<std::uint32_t>(g.slots_for(length));
    if (kind == frame_kind::pad) {
      slots = slots_left;
      length = 0;
    }
    if (slots > slots_left) return;
    const bool honest_seq = in.take<std::uint8_t>() % 8 != 0;
    const std::uint32_t seq = honest_seq ? next_seq_ : in.take<std::uint32_t>();
    std::byte* at = writing().bytes.get() + std::uint64_t{write_slot_} * g.slot_size;
    const auto header = encode_header({seq, length, kind, 0, static_cast<std::uint16_t>(slots), 0});
    if (kind == frame_kind::enlarge_req || kind == frame_kind::shrink_req || kind == frame_kind::direct_offer ||
        kind == frame_kind::direct_done) {
      std::memcpy(at + header_bytes, control.data(), length);
    } else if (kind == frame_kind::frag_first && length >= fragment_prefix_bytes) {
      put<std::uint64_t>(at + header_bytes, in.take<std::uint32_t>());
    }
    put<std::uint32_t>(at + trailer_offset(length), seq);
    std::memcpy(at, header.data(), header.size());
    next_seq_ = next_seq(seq);
    write_slot_ = (write_slot_ + slots) % g.slot_count;
  }

  // Bytes anywhere in the ring being written, as a peer scribbling over its window would.
  void write_raw(bellows::fuzz::script& in) {
    auto& ring = writing();
    const std::uint64_t offset = in.take<std::uint32_t>() % ring.size;
    const std::size_t length = std::min<std::uint64_t>(in.take<std::uint8_t>() % 64 + 1, ring.size - offset);
    for (std::size_t i = 0; i < length; ++i) ring.bytes[offset + i] = static_cast<std::byte>(in.take<std::uint8_t>());
  }

  void poll() {
    receiver_events ev;
    rx_.poll(ev);
    check(ev);
  }

  void release(std::uint8_t which) {
    if (held_.empty()) return;
    const auto at = held_.begin() + static_cast<std::ptrdiff_t>(which % held_.size());
    receiver_events ev;
    rx_.release(*at, ev);
    held_.erase(at);
    check(ev);
  }

  void provision(std::uint8_t choice) {
    if (!requested_) return;
    const auto request = *requested_;
    requested_.reset();
    const auto bytes = rx_.options().tiers[request.tier].ring_bytes();
    std::optional<local_ring> granted;
    if (choice % 4 != 0 && bytes <= largest_granted_ring) {
      rings_.push_back(allocate(bytes));
      granted = local_ring{rings_.size(), 1, 0, rings_.back().bytes.get(), request.tier, ++epoch_};
      granted_tier_ = request.tier;  // the writer moves there when the script says (a late ack)
    }
    receiver_events ev;
    rx_.provisioned(request.request_id, granted, ev);
    check(ev);
  }

  void move_to_granted() {
    if (!granted_tier_) return;
    writing_ring_ = rings_.size() - 1;
    writing_tier_ = *granted_tier_;
    granted_tier_.reset();
    write_slot_ = 0;  // sequence numbers go on across rings
  }

  void pressure(bool on) {
    receiver_events ev;
    rx_.set_pressure(on, ev);
    check(ev);
  }

  void check(const receiver_events& ev) {
    if (failed_) {
      if (!ev.frames.empty()) throw std::logic_error("a failed receiver delivered a frame");
      if (!rx_.failed()) throw std::logic_error("a failed receiver recovered");
    }
    for (const auto& f : ev.frames) {
      if (!f.payload.empty() &&
          std::none_of(rings_.begin(), rings_.end(), [&](const ring_memory& r) { return r.contains(f.payload); }))
        throw std::logic_error("a payload outside every ring");
      held_.push_back(f.token);
    }
    if (ev.provision) requested_ = ev.provision;
    if (ev.failure) {
      if (*ev.failure != bellows::error::protocol_violation && *ev.failure != bellows::error::message_size)
        throw std::logic_error("a failure other than protocol_violation or message_size: " + ev.failure->message());
      failed_ = true;
    }
  }

  std::vector<ring_memory> rings_;
  receiver rx_;
  std::deque<frame_token> held_;
  std::optional<provision_request> requested_;
  std::uint32_t writing_tier_ = 0;
  std::size_t writing_ring_ = 0;
  std::optional<std::uint32_t> granted_tier_;
  std::uint32_t write_slot_ = 0;
  std::uint32_t next_seq_ = 1;
  std::uint32_t epoch_ = 0;
  bool failed_ = false;
};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  return bellows::fuzz::play<harness>(data, size);
}
