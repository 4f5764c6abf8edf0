#include "proto/receiver.hpp"

#include "proto/shared_access.hpp"

#include <algorithm>
#include <utility>

namespace bellows::proto {

receiver::receiver(direction_options options, local_ring initial) : options_(std::move(options)) {
  current_.ring = initial;
}

std::vector<local_ring> receiver::live_rings() const {
  std::vector<local_ring> rings{current_.ring};
  if (granted_) rings.push_back(*granted_);
  for (const auto& r : retired_) rings.push_back(r.ring);
  return rings;
}

void receiver::violation(receiver_events& out) { fail(make_error_code(error::protocol_violation), out); }

void receiver::fail(std::error_code ec, receiver_events& out) {
  if (failed_) return;
  failed_ = ec;
  out.failure = ec;
}

void receiver::poll(receiver_events& out) {
  scan(out);
  // PAD and control frames are consumed by the scan itself and may complete a credit batch.
  if (!failed_) report_credit(out);
}

void receiver::scan(receiver_events& out) {
  // One lap of the ring at most: everything beyond needs credits we have not returned yet.
  for (std::uint32_t scanned = 0; scanned < geometry().slot_count; ++scanned) {
    if (failed_ || closed_ || pending_) return;
    const std::byte* frame = current_.ring.base + std::uint64_t{cursor_slot_} * geometry().slot_size;
    const frame_header h = read_header(frame);
    if (h.seq != expected_seq_) {
      if (switch_if_written(out)) continue;
      return;
    }
    if (h.seq_again != h.seq) {
      ++heads_without_tail_;  // the head word landed, the rest of the header not yet
      return;
    }
    if (validate_header(h, geometry(), cursor_slot_)) return violation(out);
    const trailer_state tail = check_trailer(frame, h);
    if (!tail.ready) {
      ++heads_without_tail_;  // head seen, tail not yet: never read the payload early
      return;
    }
    if (tail.ec) return violation(out);
    expected_seq_ = next_seq(expected_seq_);
    cursor_slot_ = (cursor_slot_ + h.slots) % geometry().slot_count;
    if (!accept(h, frame, out)) return;
  }
}

bool receiver::accept(const frame_header& h, const std::byte* frame, receiver_events& out) {
  const std::byte* payload = frame + header_bytes;
  switch (h.kind) {
    case frame_kind::data: {
      const std::uint32_t length = h.length - h.gap;
      if (in_message_ || !take_offered(length)) return violation(out), false;
      const std::uint64_t ordinal = hold(h.slots, false);
      out.frames.push_back({{current_.ring.epoch, ordinal}, h.kind, {payload + h.gap, length}, length});
      return true;
    }
    case frame_kind::frag_first:
    case frame_kind::frag_more:
    case frame_kind::frag_last: return accept_fragment(h, payload, out);
    case frame_kind::pad: hold(h.slots, true); return true;
    case frame_kind::switched:
      // Only as the first frame of a ring.
      if (current_.consumed != 0 || !current_.held.empty() || cursor_slot_ != h.slots) return violation(out), false;
      hold(h.slots, true);
      return true;
    case frame_kind::enlarge_req:
    case frame_kind::shrink_req: return accept_retier(h, payload, out);
    case frame_kind::direct_offer:
    case frame_kind::direct_done: return accept_direct(h, payload, out);
    case frame_kind::close:
      if (in_message_ || offer_) return violation(out), false;
      hold(h.slots, true);
      closed_ = true;
      out.peer_closed = true;
      report_credit(out);
      return false;
  }
  return violation(out), false;
}

bool receiver::accept_fragment(const frame_header& h, const std::byte* payload, receiver_events& out) {
  std::uint64_t data_length = h.length;
  std::uint64_t announced = 0;
  if (h.kind == frame_kind::frag_first) {
    if (in_message_) return violation(out), false;
    announced = load_relaxed<std::uint64_t>(payload);
    payload += fragment_prefix_bytes;
    data_length -= fragment_prefix_bytes;
    // A message that fits one frame of this ring is never fragmented by a correct sender.
    if (announced > options_.max_message_size || announced <= data_length || !take_offered(announced))
      return violation(out), false;
    in_message_ = true;
    message_total_ = announced;
    message_received_ = 0;
  } else if (!in_message_) {
    return violation(out), false;
  }
  message_received_ += data_length;
  const bool complete = message_received_ == message_total_;
  if (message_received_ > message_total_ || complete != (h.kind == frame_kind::frag_last)) return violation(out), false;
  if (complete) in_message_ = false;
  const std::uint64_t ordinal = hold(h.slots, false);
  out.frames.push_back({{current_.ring.epoch, ordinal}, h.kind, {payload, data_length}, announced});
  return true;
}

bool receiver::accept_retier(const frame_header& h, const std::byte* payload, receiver_events& out) {
  const auto request = decode_retier(payload);
  if (!request || in_message_ || request->request_id <= last_request_id_ || request->tier >= options_.tiers.size())
    return violation(out), false;
  const bool shrink = h.kind == frame_kind::shrink_req;
  // Only one request is outstanding, and the next comes after the sender moved to its ring.
  if (granted_ || (shrink ? request->tier >= current_.ring.tier : request->tier <= current_.ring.tier))
    return violation(out), false;
  last_request_id_ = request->request_id;
  hold(h.slots, true);
  pending_ = provision_request{request->request_id, request->tier, shrink};
  out.provision = pending_;
  // Answer first: the ring the answer names decides where the peer's next frames may be.
  return false;
}

bool receiver::take_offered(std::uint64_t length) {
  // After a declined offer the offered message comes through the ring: the same length. An
  // offer ahead comes only behind a lent buffer, whose message comes with DIRECT_DONE.
  if (!offer_) return true;
  if (offer_ahead_) return false;
  return std::exchange(offer_, std::nullopt)->length == length;
}

void receiver::offer_lent(std::uint64_t offer_id) noexcept {
  if (offer_ && offer_->id == offer_id) offer_->lent = true;
  if (offer_ahead_ && offer_ahead_->id == offer_id) offer_ahead_->lent = true;
}

bool receiver::accept_direct(const frame_header& h, const std::byte* payload, receiver_events& out) {
  // A fetched offer's payload is a direct note followed by where to read: one decode takes
  // whichever the length says.
  fetch_note fetch;
  if (h.length == fetch_payload_bytes) {
    const auto decoded = decode_fetch(payload);
    if (!decoded) return violation(out), false;
    fetch = *decoded;
  } else {
    const auto decoded = decode_direct(payload);
    if (!decoded) return violation(out), false;
    fetch.offer = *decoded;
  }
  const direct_note& note = fetch.offer;
  if (in_message_) return violation(out), false;
  if (h.kind == frame_kind::direct_offer) {
    const bool ahead_allowed = offer_ && offer_->lent && !offer_ahead_ && fetch.source == 0;
    if ((offer_ && !ahead_allowed) || note.offer_id <= last_offer_id_ || note.length > options_.max_message_size)
      return violation(out), false;
    last_offer_id_ = note.offer_id;
    (offer_ ? offer_ahead_ : offer_) = open_offer{note.offer_id, note.length};
  } else {
    if (!offer_ || note.offer_id != offer_->id || note.length != offer_->length) return violation(out), false;
    offer_ = std::exchange(offer_ahead_, std::nullopt);
  }
  // Held like a message's frame: delivery decides about the offer, in order with the rest.
  const std::uint64_t ordinal = hold(h.slots, false);
  out.frames.push_back({{current_.ring.epoch, ordinal},
                        h.kind,
                        {},
                        note.length,
                        note.offer_id,
                        fetch.source,
                        fetch.guard_address,
                        fetch.guard_value});
  return true;
}

bool receiver::switch_if_written(receiver_events& out) {
  if (!granted_ || read_header(granted_->base).seq != expected_seq_) return false;
  // The old ring's frames all came before this one: it is done.
  if (current_.held.empty()) {
    out.released_regions.push_back(current_.ring.region);
  } else {
    retired_.push_back(std::move(current_));
  }
  current_ = ring_state{};
  current_.ring = *granted_;
  current_.first_ordinal = next_ordinal_;
  granted_.reset();
  cursor_slot_ = 0;
  return true;
}

std::uint64_t receiver::hold(std::uint16_t slots, bool released) {
  if (current_.held.empty()) current_.first_ordinal = next_ordinal_;
  current_.held.push_back({slots, released});
  if (released) advance_consumed(current_);
  return next_ordinal_++;
}

void receiver::advance_consumed(ring_state& ring) {
  const ring_geometry& g = options_.tiers[ring.ring.tier];
  while (!ring.held.empty() && ring.held.front().released) {
    // A frame's interior may start a slot with bytes (payload, padding, a trailer) that equal
    // a later lap's sequence number at that slot, and a scan would take them for its header.
    // Zeroed slot starts never match (sequence numbers skip 0); the peer writes them again only
    // after the credit that follows.
    for (std::uint32_t i = 0; i < ring.held.front().slots; ++i) {
      const std::uint64_t slot = (ring.consumed + i) % g.slot_count;
      store_relaxed<std::uint64_t>(ring.ring.base + slot * g.slot_size, 0);
    }
    ring.consumed += ring.held.front().slots;
    ring.held.pop_front();
    ++ring.first_ordinal;
  }
}

void receiver::report_credit(receiver_events& out) {
  // Half-ring batches keep credit writes rare; a sender that waits is always owed at least that
  // many because no frame exceeds half the ring. After CLOSE every slot is reported at once so
  // the peer's graceful close can complete.
  const std::uint64_t unreported = current_.consumed - current_.reported;
  if (unreported == 0 || (unreported < geometry().slot_count / 2 && !closed_)) return;
  current_.reported = current_.consumed;
  out.credit_word = make_credit_word(current_.ring.epoch, current_.consumed);
  out.ring_doorbell = true;
}

void receiver::release(frame_token token, receiver_events& out) {
  auto release_in = [&](ring_state& ring) {
    if (token.ordinal < ring.first_ordinal || token.ordinal - ring.first_ordinal >= ring.held.size()) return false;
    ring.held[token.ordinal - ring.first_ordinal].released = true;
    advance_consumed(ring);
    return true;
  };
  if (token.ring_epoch == current_.ring.epoch) {
    if (release_in(current_) && !failed_) report_credit(out);
    return;
  }
  auto it = std::find_if(retired_.begin(), retired_.end(),
                         [&](const ring_state& r) { return r.ring.epoch == token.ring_epoch; });
  if (it == retired_.end() || !release_in(*it)) return;
  if (it->held.empty()) {
    // Patent Fig. 4: the old ring goes only once the application let go of its last frame.
    out.released_regions.push_back(it->ring.region);
    retired_.erase(it);
  }
}

void receiver::provisioned(std::uint64_t request_id, std::optional<local_ring> ring, receiver_events& out) {
  if (!pending_ || pending_->request_id != request_id) {
    if (ring) out.released_regions.push_back(ring->region);
    return;
  }
  const provision_request request = *pending_;
  pending_.reset();
  if (failed_) {
    if (ring) out.released_regions.push_back(ring->region);
    return;
  }
  ack_record ack{request.request_id, ack_status::denied, request.tier, 0, 0, 0, 0, 0};
  if (ring) {
    const ring_geometry& g = options_.tiers[request.tier];
    ring->tier = request.tier;
    ring->epoch = current_.ring.epoch + 1;
    ack = ack_record{request.request_id, ack_status::granted, request.tier, ring->address,
                     ring->key,          g.slot_size,         g.slot_count, ring->epoch};
    granted_ = *ring;
  }
  out.ack = ack;
  out.ring_doorbell = true;
  poll(out);
}

void receiver::set_pressure(bool on, receiver_events& out) {
  if (on == pressure_ || failed_) return;
  pressure_ = on;
  out.flags_word = current_flags();
  out.ring_doorbell = true;
}

void receiver::set_polled(bool on, receiver_events& out) {
  if (on == polled_ || failed_) return;
  polled_ = on;
  // No doorbell: the peer reads this word when it is about to ring one, not when rung.
  out.flags_word = current_flags();
}

std::uint64_t receiver::current_flags() const noexcept {
  return (pressure_ ? control_block::pressure_flag : 0) | (polled_ ? control_block::polled_flag : 0);
}

}  // namespace bellows::proto
