// The channel core's output side: the sender's and receiver's events turned into actions (frames
// and control words laid out as bytes, completions, tier events, named steps), in the order a
// driver must carry them out.
#include "proto/channel_core.hpp"

#include "proto/shared_access.hpp"

#include <cstring>
#include <utility>

namespace bellows::proto {
namespace {

tier_event::what public_kind(retier_event::what kind) {
  switch (kind) {
    case retier_event::what::requested: return tier_event::what::requested;
    case retier_event::what::granted: return tier_event::what::granted;
    case retier_event::what::denied: return tier_event::what::denied;
    case retier_event::what::timed_out: return tier_event::what::timed_out;
  }
  return tier_event::what::requested;
}

/// The step a frame of this kind completes once it is placed, if it is a named one.
std::optional<step> step_after(frame_kind written) {
  switch (written) {
    case frame_kind::enlarge_req: return step::enlarge_request_written;
    case frame_kind::shrink_req: return step::shrink_request_written;
    case frame_kind::frag_first:
    case frame_kind::frag_more: return step::fragment_written;
    case frame_kind::close: return step::close_written;
    case frame_kind::direct_offer: return step::direct_offered;
    default: return std::nullopt;
  }
}

}  // namespace

void channel_core::take(const sender_events& ev, clock_time now) {
  // An answer (or its timeout) is reported before the writes it let go, a request right after
  // its own frame: the driver times each event when it carries it out.
  const retier_event* request = nullptr;
  for (const auto& r : ev.retiers) {
    if (r.kind == retier_event::what::requested) {
      request = &r;
    } else {
      report_retier(r, now);
    }
  }
  bool offered = false;
  for (const auto& w : ev.writes) {
    if (!may_write()) break;
    if (w.header.kind == frame_kind::enlarge_req) out_.push_back(reached{step::enlarge_request_due});
    // An offer written ahead of a lent buffer's bytes is announced before them, so that the
    // peer answers it while they travel.
    if (w.bare && std::exchange(offered, false)) push_doorbell();
    if (!w.bare && w.header.kind == frame_kind::direct_offer) offered = true;
    place_frame(w);
    if (auto s = step_after(w.header.kind)) out_.push_back(reached{*s});
    if (request && (w.header.kind == frame_kind::enlarge_req || w.header.kind == frame_kind::shrink_req))
      report_retier(*std::exchange(request, nullptr), now);
  }
  if (request) report_retier(*request, now);
  if (ev.ring_doorbell) doorbell_due_ = true;
  if (ev.lent_write && may_write()) handover_due_ = ev.lent_write;
  for (const auto& c : ev.completions) send_finished(c);
  if (ev.closed) {
    close_result_ = *ev.closed;
    if (close_id_) {
      complete(close_done{*close_id_, *ev.closed});
      close_id_.reset();
    }
  }
  if (ev.failure) fail(*ev.failure);
}

void channel_core::take(const receiver_events& ev) {
  for (const auto& f : ev.frames) ready_.push_back(f);
  if (ev.peer_closed) out_.push_back(reached{step::close_received});
  if (ev.credit_word) {
    std::byte word[8];
    put(word, *ev.credit_word);
    place_control(control_block::credit_offset, word);
    credit_due_ = true;
  }
  if (ev.flags_word) {
    std::byte word[8];
    put(word, *ev.flags_word);
    place_control(control_block::flags_offset, word);
  }
  if (ev.ack) {
    // Head and fields first, the tail flag in a write of its own after them: the sender trusts
    // the fields once it sees the tail, and one write does not order its own bytes.
    const auto ack = encode_ack(*ev.ack);
    place_control(control_block::ack_offset, std::span(ack).first(ack_layout::tail));
    if (may_write()) out_.push_back(reached{step::ack_head_written});
    place_control(control_block::ack_offset + ack_layout::tail, std::span(ack).subspan(ack_layout::tail));
  }
  for (auto region : ev.released_regions) out_.push_back(release_region{region});
  if (ev.ring_doorbell) doorbell_due_ = true;
  if (ev.failure) return fail(*ev.failure);
  if (ev.provision && may_write())
    out_.push_back(provision{*ev.provision, options_.tiers[ev.provision->tier].ring_bytes()});
}

void channel_core::place_frame(const frame_write& w) {
  auto& p = std::get<place>(out_.emplace_back(std::in_place_type<place>));
  if (w.bare) {
    p.key = w.ring.key;
    p.address = w.ring.address;
    p.prefix_length = 0;
    p.source = w.source;
    p.source_length = w.source_length;
    p.held_until_done = w.source.parts.data();
    return;
  }
  p.key = w.ring.key;
  p.address = w.ring.address + w.offset;
  const auto header = encode_header(w.header);
  std::memcpy(p.prefix_bytes.data(), header.data(), header.size());
  // A gap goes out zeroed rather than as whatever the ring held, so that what a ring holds
  // depends only on what was sent.
  if (w.header.gap != 0) std::memset(p.prefix_bytes.data() + header.size(), 0, w.header.gap);
  const std::size_t inline_at = header.size() + w.header.gap;
  std::memcpy(p.prefix_bytes.data() + inline_at, w.inline_payload.data(), w.inline_length);
  p.prefix_length = static_cast<std::uint32_t>(inline_at + w.inline_length);
  p.source = w.source;
  p.source_offset = w.source_offset;
  p.source_length = w.source_length;
  p.trailer_address = w.ring.address + w.trailer_at();
  p.trailer_bytes = encode_trailer(w.header.seq);
  p.has_trailer = true;
}

void channel_core::place_control(std::size_t offset, std::span<const std::byte> bytes) {
  if (!may_write()) return;
  auto& p = std::get<place>(out_.emplace_back(std::in_place_type<place>));
  p.key = setup_.peer_control_key;
  p.address = setup_.peer_control_address + offset;
  std::memcpy(p.prefix_bytes.data(), bytes.data(), bytes.size());
  p.prefix_length = static_cast<std::uint32_t>(bytes.size());
}

void channel_core::send_finished(const send_completion& c) {
  if (c.id == 0) return;  // a try_send, counted there
  auto it = std::find_if(sends_.begin(), sends_.end(), [&](const pending_send& op) { return op.id == c.id; });
  if (it == sends_.end()) return;
  if (!c.ec) {
    if (c.direct) ++counters_.direct_messages_sent;
    ++counters_.messages_sent;
    counters_.bytes_sent += c.bytes;
  }
  complete(send_done{c.id, c.ec, c.ec ? 0 : c.bytes, std::move(it->message)});
  if (it == sends_.begin()) {
    sends_.pop_front();
  } else {
    sends_.erase(it);
  }
}

void channel_core::report_retier(const retier_event& r, clock_time now) {
  using what = retier_event::what;
  if (r.kind == what::granted) ++(r.shrink ? counters_.shrinks : counters_.enlargements);
  if (r.kind == what::denied) ++counters_.denials;
  if (r.kind == what::timed_out) ++counters_.ack_timeouts;
  if (r.kind == what::requested) requested_at_ = now;
  const auto elapsed = r.kind == what::requested ? std::chrono::nanoseconds{0} : now - requested_at_;
  out_.push_back(tier_changed{{public_kind(r.kind), r.shrink, r.from_tier, r.to_tier, r.trigger_length, elapsed}});
}

void channel_core::push_doorbell() {
  const auto* flags = reinterpret_cast<const std::uint64_t*>(setup_.control + control_block::flags_offset);
  out_.emplace_back(ring_doorbell{flags, control_block::polled_flag});
}

void channel_core::end_of_input() {
  // One doorbell announces everything this input wrote, and comes after all of it. The
  // completions come after the doorbell: the peer can start on the frames while the driver
  // hands the handlers over (a ping-pong's reply waits for nothing else).
  if (std::exchange(doorbell_due_, false) && may_write()) push_doorbell();
  if (handover_due_) out_.emplace_back(check_handover{*std::exchange(handover_due_, std::nullopt)});
  if (finished_.empty()) return;
  for (auto& done : finished_) out_.push_back(std::move(done));
  finished_.clear();
}

}  // namespace bellows::proto
