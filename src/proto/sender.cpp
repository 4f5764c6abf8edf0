#include "proto/sender.hpp"

#include "proto/fetch_guard.hpp"
#include "proto/shared_access.hpp"

#include <algorithm>
#include <utility>

namespace bellows::proto {

namespace {

// Enlargement for throughput: a sender that ran out of credit this often within the window is
// streaming faster than its ring's half-ring credit batches come back. Every default tier's ring
// has 16 slots, so what a larger ring buys is room for more messages only where the ones that
// stall take several slots of the current ring: there the next tier's slots hold them one each.
// Messages that already fit a slot each stay: a larger ring would hold no more of them, only
// spread them over more memory (measured slower).
constexpr std::uint32_t stalls_before_growing = 64;
constexpr auto stall_window = std::chrono::milliseconds(10);

}  // namespace

sender::sender(direction_options options, remote_ring initial, remote_window granted, clock_time now)
    : options_(std::move(options)), ring_(initial), granted_(granted), last_large_(now) {}

std::uint32_t sender::free_slots() const noexcept {
  return static_cast<std::uint32_t>(geometry().slot_count - (produced_ - consumed_));
}

void sender::submit(std::uint64_t id, gather_list message, clock_time now, sender_events& out) {
  if (failed_ || close_requested_) {
    out.completions.push_back({id, failed_ ? failed_ : make_error_code(error::channel_closed), 0});
    return;
  }
  queue_.push_back({id, message, now});
}

outcome<try_result> sender::try_send(gather_list message, clock_time now, sender_events& out) {
  if (failed_) return failed_;
  if (close_requested_) return make_error_code(error::channel_closed);
  if (held_by_request()) return outstanding_->shrink ? try_result::no_room : try_result::enlarging;
  if (!queue_.empty()) return try_result::no_room;
  const std::uint64_t length = message.length;
  if (length > options_.tiers.max_message(0)) last_large_ = now;
  if (length <= options_.tiers.max_message(ring_.tier))
    return write_whole(message, now, out) ? try_result::written : try_result::no_room;
  const auto wanted =
      static_cast<std::uint32_t>(options_.tiers.smallest_fitting(length).value_or(options_.tiers.largest()));
  if (wanted > ring_.tier && now >= denied_until_ && !outstanding_) {
    start_retier(wanted, false, length, now, out);
    return outstanding_ ? try_result::enlarging : try_result::no_room;
  }
  // Fragments, all at once.
  const std::uint64_t needed = fragment_slots(length);
  if (needed > geometry().slot_count) return try_result::too_large;
  if (!fragments_fit_now(length)) {
    stalled_ = true;
    return try_result::no_room;
  }
  queue_.push_back({0, message, now});
  pump(now, out);
  return try_result::written;
}

bool sender::cancel(std::uint64_t id) noexcept {
  for (auto it = queue_.begin(); it != queue_.end(); ++it) {
    if (it->id != id) continue;
    // Once offered, it goes one way or the other: the receiver may be lending its buffer for
    // it, or, having declined, expects it through the ring next.
    if (it->written != 0 || it->offered) return false;
    queue_.erase(it);
    return true;
  }
  return false;
}

void sender::close(clock_time, sender_events& out) {
  if (failed_) {
    out.closed = failed_;
    return;
  }
  close_requested_ = true;
}

void sender::fail(std::error_code ec, sender_events& out) {
  if (failed_) return;
  failed_ = ec;
  // The receiver may be reading the offered message from our buffer right now; once the send
  // completes the buffer is the application's again, and what was read must not count.
  if (offer_ && offer_fetched_) fetch_guard::withdraw();
  while (!queue_.empty()) complete_front(ec, 0, out);
  if (close_requested_ && !close_reported_) {
    close_reported_ = true;
    out.closed = ec;
  }
  outstanding_.reset();
  offer_.reset();
  lent_write_.reset();
  out.failure = ec;
}

void sender::step(const std::byte* control_block, clock_time now, sender_events& out) {
  if (failed_) return;
  read_control(control_block, now, out);
  if (failed_) return;
  // The receipt first: an answer to the offer behind a lent write is for the queue's front
  // only once that write's send completed.
  if (lent_write_) read_receipt(control_block, out);
  if (offer_ && !failed_ && !held_by_receipt()) read_lend_slot(control_block, out);
  if (failed_) return;
  fall_back_if_unanswered(now, out);
  pump(now, out);
  report_close_if_done(out);
}

void sender::settle(const std::byte* control_block, clock_time now, sender_events& out) {
  if (failed_) return;
  read_control(control_block, now, out);
  // A receipt that came before the peer went still completes its send: the message is there.
  if (lent_write_ && !failed_) read_receipt(control_block, out);
  if (offer_ && offer_fetched_ && !failed_) read_lend_slot(control_block, out);
  if (!failed_) report_close_if_done(out);
}

void sender::report_close_if_done(sender_events& out) {
  if (close_written_ && !close_reported_ && consumed_ == produced_) {
    close_reported_ = true;
    out.closed = std::error_code{};
  }
}

void sender::read_control(const std::byte* control_block, clock_time now, sender_events& out) {
  const auto credit = load_acquire<std::uint64_t>(control_block + control_block::credit_offset);
  // A word for another epoch belongs to a ring we already left; it says nothing about this one.
  if ((credit >> credit_epoch_shift) == (ring_.epoch & 0xffffu)) {
    const std::uint64_t consumed = credit & credit_count_mask;
    if (consumed < consumed_ || consumed > produced_) return fail(make_error_code(error::protocol_violation), out);
    consumed_ = consumed;
  }
  const auto flags = load_relaxed<std::uint64_t>(control_block + control_block::flags_offset);
  pressure_ = (flags & control_block::pressure_flag) != 0;

  if (!outstanding_) return;
  const ack_poll ack =
      poll_ack(control_block + control_block::ack_offset, outstanding_->request.request_id, last_acked_id_);
  if (ack.ec) return fail(ack.ec, out);
  if (ack.status == ack_poll::state::in_progress) ++partial_acks_seen_;
  if (ack.status != ack_poll::state::complete) return;
  if (auto ec = validate_ack(ack.record, outstanding_->request, options_.tiers, ring_.epoch + 1, granted_))
    return fail(ec, out);
  apply_ack(ack.record, now, out);
}

void sender::apply_ack(const ack_record& ack, clock_time now, sender_events& out) {
  const pending_request done = *outstanding_;
  outstanding_.reset();
  last_acked_id_ = ack.request_id;
  retier_event event{retier_event::what::granted, ack.request_id, ring_.tier, ack.tier, 0, done.shrink};
  if (ack.status == ack_status::granted) {
    ring_ = remote_ring{ack.ring_key, ack.ring_address, ack.tier, ack.epoch};
    produced_ = consumed_ = 0;
    last_large_ = now;
    // The receiver leaves the old ring when it finds our next frame in the new one. With
    // nothing queued (a shrink, mostly) SWITCHED is that frame, so the old ring is freed now
    // rather than at the next message.
    if (queue_.empty() && !close_requested_) emit(frame_kind::switched, 0, 1, out);
  } else {
    event.kind = retier_event::what::denied;
    denied_until_ = now + options_.retry_after_denial;
  }
  out.retiers.push_back(event);
}

void sender::read_lend_slot(const std::byte* control_block, sender_events& out) {
  const lend_poll answer = poll_lend(control_block + control_block::lend_offset, *offer_, last_answered_offer_);
  if (answer.ec) return fail(answer.ec, out);
  if (answer.status == lend_poll::state::complete) apply_lend(answer.record, out);
}

bool sender::offered_direct(const queued_send& s) const noexcept {
  if (s.written != 0 || s.offer_declined || options_.offer_direct_above == 0) return false;
  if (s.message.length <= options_.offer_direct_above) return false;
  // A fetched offer names one range of our memory, and a file's bytes are in none.
  return !options_.offers_are_fetched || (s.message.parts.size() == 1 && s.message.file.descriptor < 0);
}

void sender::offer_direct(queued_send& s, sender_events& out, std::uint64_t also_reserved) {
  const bool fetched = options_.offers_are_fetched;
  const std::uint32_t payload_bytes = fetched ? fetch_payload_bytes : direct_payload_bytes;
  const auto slots = geometry().slots_for(payload_bytes);
  // Room for DIRECT_DONE too, so a granted offer never waits for credit in between.
  if (!reserve((fetched ? slots : slots + 1) + also_reserved, out)) return;
  const direct_note note{++last_offer_id_, s.message.length};
  frame_write& w = emit(frame_kind::direct_offer, payload_bytes, slots, out);
  if (fetched) {
    const auto guard = fetch_guard::current();
    const auto source = reinterpret_cast<std::uint64_t>(s.message.parts.front().data());
    const auto payload = encode_fetch({note, source, guard.address, guard.value});
    static_assert(payload.size() <= std::tuple_size_v<decltype(w.inline_payload)>);
    std::copy(payload.begin(), payload.end(), w.inline_payload.begin());
  } else {
    const auto payload = encode_direct(note);
    std::copy(payload.begin(), payload.end(), w.inline_payload.begin());
  }
  w.inline_length = payload_bytes;
  offer_ = note.offer_id;
  offer_fetched_ = fetched;
  s.offered = true;
}

void sender::apply_lend(const lend_record& answer, sender_events& out) {
  offer_.reset();
  const bool fetched = std::exchange(offer_fetched_, false);
  last_answered_offer_ = answer.offer_id;
  queued_send& s = queue_.front();
  if (answer.status == ack_status::denied) {
    s.offer_declined = true;
    return;
  }
  const std::uint64_t length = s.message.length;
  if (fetched) {
    // The receiver has read the message: nothing more to write.
    if (answer.status != ack_status::received || answer.length != length)
      return fail(make_error_code(error::protocol_violation), out);
    complete_front({}, length, out, true);
    return;
  }
  if (answer.status != ack_status::granted || answer.length < length)
    return fail(make_error_code(error::protocol_violation), out);
  // The next message's offer goes ahead of these bytes: the receiver answers it while they
  // travel, and the next message follows them without a round trip in between. Room for this
  // message's DONE was reserved with its offer.
  if (queue_.size() > 1 && !queue_[1].offered && offered_direct(queue_[1])) offer_direct(queue_[1], out, 1);
  // The message, then DIRECT_DONE behind it in the ring: writes are placed in issue order, so
  // the receiver finds the bytes in its buffer when it reads the frame.
  frame_write& bytes = out.writes.emplace_back();
  bytes.bare = true;
  bytes.ring = remote_ring{answer.key, answer.address, ring_.tier, ring_.epoch};
  bytes.source = s.message;
  bytes.source_length = length;
  frame_write& done = emit(frame_kind::direct_done, direct_payload_bytes, 1, out);
  const auto payload = encode_direct({answer.offer_id, length});
  std::copy(payload.begin(), payload.end(), done.inline_payload.begin());
  done.inline_length = direct_payload_bytes;
  // Complete once the provider says the bytes left (handed_over), or on the receipt: a
  // provider may still hold some (tcp: in its send queue), and those leave only while the
  // application runs the io_context.
  s.written = length;
  lent_write_ = answer.offer_id;
  lent_write_completed_ = false;
  out.lent_write = answer.offer_id;
}

void sender::handed_over(std::uint64_t offer_id, sender_events& out) {
  if (failed_ || !held_by_receipt() || *lent_write_ != offer_id) return;
  lent_write_completed_ = true;
  complete_front({}, queue_.front().message.length, out, true);
}

void sender::read_receipt(const std::byte* control_block, sender_events& out) {
  // Receipts come in offer order, and none for a message not yet written.
  const auto receipt = load_acquire<std::uint64_t>(control_block + control_block::receipt_offset);
  if (receipt < *lent_write_) return;
  if (receipt > *lent_write_) return fail(make_error_code(error::protocol_violation), out);
  if (!lent_write_completed_) complete_front({}, queue_.front().message.length, out, true);
  lent_write_.reset();
}

void sender::fall_back_if_unanswered(clock_time now, sender_events& out) {
  if (!held_by_request() || queue_.empty()) return;
  if (now - std::max(queue_.front().enqueued, outstanding_->sent) < options_.ack_timeout) return;
  // A slow peer must not fail a send (the patent's block 350 failed it): the waiting sends go
  // on through the current ring, fragmented as after a denial, and a late ack still moves the
  // channel to the ring it grants. The receiver finds our next frame in whichever ring we chose.
  outstanding_->fell_back = true;
  out.retiers.push_back({retier_event::what::timed_out, outstanding_->request.request_id, ring_.tier,
                         outstanding_->request.tier, 0, outstanding_->shrink});
}

std::optional<clock_time> sender::next_deadline() const noexcept {
  if (failed_) return std::nullopt;
  if (outstanding_) {
    if (queue_.empty() || outstanding_->fell_back) return std::nullopt;
    return std::max(queue_.front().enqueued, outstanding_->sent) + options_.ack_timeout;
  }
  if (queue_.empty() && ring_.tier > 0 && !close_requested_)
    return std::max(last_large_ + options_.idle_shrink_after, denied_until_);
  return std::nullopt;
}

std::uint64_t sender::fragment_slots(std::uint64_t length) const {
  const std::uint64_t first_chunk = geometry().max_frame_payload() - fragment_prefix_bytes;
  const std::uint64_t full_frames = length <= first_chunk ? 0 : (length - first_chunk) / geometry().max_frame_payload();
  const std::uint64_t rest = length <= first_chunk ? 0 : (length - first_chunk) % geometry().max_frame_payload();
  const std::uint64_t frames =
      geometry().max_frame_slots() * (1 + full_frames) + (rest ? geometry().slots_for(rest) : 0);
  return frames + geometry().max_frame_slots();  // room for one PAD at the wrap
}

bool sender::fragments_fit_now(std::uint64_t length) const {
  // Walks the frames as pump_one would lay them out from the cursor, PAD at the wrap included;
  // it stops once the free room is spent, so a huge message costs a ring's worth of steps.
  const std::uint64_t ring_slots = geometry().slot_count;
  const std::uint64_t free = free_slots();
  std::uint64_t cursor = cursor_slot();
  std::uint64_t used = 0;
  std::uint64_t prefix = fragment_prefix_bytes;
  for (std::uint64_t left = length; left > 0 && used <= free;) {
    const std::uint64_t chunk = std::min<std::uint64_t>(left, geometry().max_frame_payload() - prefix);
    const std::uint64_t slots = geometry().slots_for(prefix + chunk);
    if (cursor + slots > ring_slots) {
      used += ring_slots - cursor;
      cursor = 0;
    }
    used += slots;
    cursor += slots;
    left -= chunk;
    prefix = 0;
  }
  return used <= free;
}

bool sender::may_go_ahead(const queued_send& front) const {
  const std::uint64_t length = front.message.length;
  return front.written > 0 || length <= options_.tiers.max_message(ring_.tier) || fragments_fit_now(length);
}

void sender::pump(clock_time now, sender_events& out) {
  const bool was_stalled = stalled_;
  const auto written_before = out.writes.size();
  stalled_ = false;
  while (!failed_ && pump_one(now, out)) {
  }
  if (stalled_ && !queue_.empty() && (!was_stalled || out.writes.size() > written_before))
    note_stall(now, queue_.front().message.length);
}

bool sender::write_whole(const gather_list& message, clock_time now, sender_events& out) {
  if (outrunning_ring_) grow_for_throughput(now, out);
  const auto slots = geometry().slots_for(message.length);
  if (!reserve(slots, out)) return false;
  // A ring grown for throughput stays while the traffic would overflow the first one; the
  // idle shrink takes it back once the traffic fits that again.
  const auto& first = options_.tiers[0];
  if ((produced_ - consumed_) * geometry().slot_size > first.slot_count * first.slot_size / 2) last_large_ = now;
  const std::uint8_t gap = message.file.descriptor >= 0 ? file_gap(message, slots) : 0;
  frame_write& w = emit(frame_kind::data, static_cast<std::uint32_t>(gap + message.length), slots, out);
  w.header.gap = gap;
  w.source = message;
  w.source_length = message.length;
  return true;
}

std::uint8_t sender::file_gap(const gather_list& message, std::uint64_t slots) const noexcept {
  // The kernel copies a file's bytes into the ring (over shm) at full speed only where they
  // land at the offset within a cache line they come from; a memory source is copied by
  // memcpy, which aligns itself. Worth a gap only where a frame is long, and never a slot.
  constexpr std::uint64_t line = max_payload_gap + 1;
  if (message.length < file_gap_min_length) return 0;
  const std::uint64_t payload_at = ring_.address + std::uint64_t{cursor_slot()} * geometry().slot_size + header_bytes;
  const auto gap = static_cast<std::uint8_t>((message.file.offset - payload_at) % line);
  return geometry().slots_for(gap + message.length) == slots ? gap : 0;
}

bool sender::write_at_once(const gather_list& message, clock_time now, sender_events& out) {
  // What pump_one would do with this message at the front of an empty queue, where it takes
  // one frame of the current ring and nothing makes it wait.
  if (failed_ || close_requested_ || !queue_.empty() || message.file.descriptor >= 0) return false;
  if ((held_by_request() && outstanding_->shrink) || offer_ || held_by_receipt()) return false;
  const std::uint64_t length = message.length;
  if (length > options_.tiers.max_message(ring_.tier)) return false;
  if (options_.offer_direct_above != 0 && length > options_.offer_direct_above) return false;
  // No room: the submit that follows meets the stall as a pump would have, PAD included, and
  // counts it towards growing the ring for throughput.
  if (!room_for(geometry().slots_for(length))) return false;
  if (length > options_.tiers.max_message(0)) last_large_ = now;
  const bool was_stalled = stalled_;
  if (write_whole(message, now, out)) return true;
  stalled_ = was_stalled;  // a request to grow the ring took the room
  return false;
}

bool sender::room_for(std::uint64_t slots) const noexcept {
  const std::uint64_t cursor = cursor_slot();
  const std::uint64_t pad = cursor + slots > geometry().slot_count ? geometry().slot_count - cursor : 0;
  return free_slots() >= pad + slots;
}

void sender::note_stall(clock_time now, std::uint64_t waiting_length) {
  ++credit_stalls_;
  if (now - stall_window_start_ > stall_window) {
    stall_window_start_ = now;
    stalls_in_window_ = 0;
  }
  if (geometry().slots_for(waiting_length) < 2) return;  // a larger ring would hold no more of it
  if (++stalls_in_window_ >= stalls_before_growing) outrunning_ring_ = true;
}

void sender::grow_for_throughput(clock_time now, sender_events& out) {
  const std::uint32_t to = ring_.tier + 1;
  if (to > options_.tiers.largest() || now - stall_window_start_ > stall_window) {
    outrunning_ring_ = false;  // no larger ring to ask for, or the burst is over
    return;
  }
  if (outstanding_ || pressure_ || now < denied_until_) return;
  start_retier(to, false, 0, now, out);
  if (!outstanding_) return;  // no room for the request yet
  outrunning_ring_ = false;
  stalls_in_window_ = 0;
  last_large_ = now;
}

bool sender::pump_one(clock_time now, sender_events& out) {
  if (queue_.empty()) {
    // CLOSE and shrinks wait for the outstanding answer: a ring switch after CLOSE would leave
    // the close's consumption unaccounted for.
    if (outstanding_) return false;
    if (close_requested_) {
      if (close_written_ || !reserve(1, out)) return false;
      emit(frame_kind::close, 0, 1, out);
      close_written_ = true;
      return false;
    }
    const bool idle_long = now - last_large_ >= options_.idle_shrink_after;
    if (ring_.tier > 0 && (idle_long || pressure_) && now >= denied_until_) start_retier(0, true, 0, now, out);
    return false;
  }

  queued_send& s = queue_.front();
  // Behind an unanswered enlarge request, what the current ring can take at once still goes
  // through it; the receiver reads that ring until our next frame shows up in the new one.
  if (held_by_request() && (outstanding_->shrink || !may_go_ahead(s))) return false;
  if (offer_ || held_by_receipt()) return false;  // the front waits for the receiver's word
  const std::uint64_t length = s.message.length;
  if (offered_direct(s)) {
    offer_direct(s, out);
    return false;
  }
  if (length > options_.tiers.max_message(0)) last_large_ = now;
  // Decided afresh until the first fragment is out: a late ack may have moved us to a ring
  // whose frames hold the whole message.
  if (s.written == 0) {
    if (length <= options_.tiers.max_message(ring_.tier)) {
      if (!write_whole(s.message, now, out)) return false;
      complete_front({}, length, out);
      return true;
    }
    const auto wanted =
        static_cast<std::uint32_t>(options_.tiers.smallest_fitting(length).value_or(options_.tiers.largest()));
    if (wanted > ring_.tier && now >= denied_until_ && !outstanding_) {
      start_retier(wanted, false, length, now, out);
      // A message whose fragments fit the ring's free room goes now, alongside its request:
      // sooner than the handshake's round trip, and the next large one finds the larger ring.
      // Anything larger waits for the ack (or its timeout), as do the sends queued behind it.
      if (!outstanding_ || !may_go_ahead(s)) return false;
    }
  }

  // Through the current tier, in frames of at most half its ring.
  const std::uint64_t prefix = s.written == 0 ? fragment_prefix_bytes : 0;
  const std::uint64_t chunk = std::min<std::uint64_t>(length - s.written, geometry().max_frame_payload() - prefix);
  const bool last = s.written + chunk == length;
  const frame_kind kind = s.written == 0 ? frame_kind::frag_first
                          : last         ? frame_kind::frag_last
                                         : frame_kind::frag_more;
  const auto frame_length = static_cast<std::uint32_t>(prefix + chunk);
  const auto slots = geometry().slots_for(frame_length);
  if (!reserve(slots, out)) return false;
  frame_write& w = emit(kind, frame_length, slots, out);
  if (prefix != 0) {
    put(w.inline_payload.data(), length);
    w.inline_length = fragment_prefix_bytes;
  }
  w.source = s.message;
  w.source_offset = s.written;
  w.source_length = chunk;
  s.written += chunk;
  if (last) complete_front({}, length, out);
  return true;
}

void sender::start_retier(std::uint32_t to, bool shrink, std::uint64_t trigger, clock_time now, sender_events& out) {
  if (!reserve(1, out)) return;
  retier_request request{++last_request_id_, to};
  frame_write& w = emit(shrink ? frame_kind::shrink_req : frame_kind::enlarge_req, retier_payload_bytes, 1, out);
  const auto payload = encode_retier(request);
  std::copy(payload.begin(), payload.end(), w.inline_payload.begin());
  w.inline_length = retier_payload_bytes;
  outstanding_ = pending_request{request, shrink, now};
  out.retiers.push_back({retier_event::what::requested, request.request_id, ring_.tier, to, trigger, shrink});
}

bool sender::reserve(std::uint64_t slots, sender_events& out) {
  const std::uint32_t cursor = cursor_slot();
  if (cursor + slots > geometry().slot_count) {
    // Written on its own as soon as it fits: waiting to write PAD and frame together could
    // wait for credits the receiver only returns in half-ring batches.
    const std::uint32_t rest = geometry().slot_count - cursor;
    if (free_slots() < rest) {
      stalled_ = true;
      return false;
    }
    emit(frame_kind::pad, 0, rest, out);
  }
  if (free_slots() < slots) {
    stalled_ = true;
    return false;
  }
  return true;
}

frame_write& sender::emit(frame_kind kind, std::uint32_t length, std::uint64_t slots, sender_events& out) {
  frame_write& w = out.writes.emplace_back();
  w.ring = ring_;
  w.offset = std::uint64_t{cursor_slot()} * geometry().slot_size;
  w.header = frame_header{next_seq_, length, kind, 0, static_cast<std::uint16_t>(slots), 0};
  next_seq_ = next_seq(next_seq_);
  produced_ += slots;
  out.ring_doorbell = true;
  return w;
}

void sender::complete_front(std::error_code ec, std::uint64_t bytes, sender_events& out, bool direct) {
  out.completions.push_back({queue_.front().id, ec, bytes, direct});
  queue_.pop_front();
}

}  // namespace bellows::proto
