// Delivery: frames the receiver accepted, in ring order, matched with the application's pending
// receives. A DATA frame is one message; FRAG_* frames are reassembled into the receive's
// buffers (or into memory a view owns); whatever a receive could not take is discarded up to
// the end of its message, so the next receive gets the next message. A receive cancelled
// part-way through a message hands what it took to the next receive.

#include "proto/channel_core.hpp"
#include "proto/shared_access.hpp"

#include <algorithm>
#include <cstring>
#include <utility>

namespace bellows::proto {
namespace {

bool ends_message(frame_kind kind) {
  return kind == frame_kind::data || kind == frame_kind::frag_last || kind == frame_kind::direct_done;
}

/// Copies `bytes` into the scatter list starting at message offset `at`.
void copy_into(const detail::scatter& into, std::uint64_t at, std::span<const std::byte> bytes) {
  for (auto part : into.parts()) {
    if (bytes.empty()) return;
    if (at >= part.size()) {
      at -= part.size();
      continue;
    }
    const std::size_t n = std::min<std::size_t>(part.size() - at, bytes.size());
    std::memcpy(part.data() + at, bytes.data(), n);
    bytes = bytes.subspan(n);
    at = 0;
  }
}

/// Copies the scatter list's bytes from message offset 0 into `out`, as many as `out` holds.
void copy_from(const detail::scatter& from, std::span<std::byte> out) {
  for (auto part : from.parts()) {
    if (out.empty()) return;
    const std::size_t n = std::min<std::size_t>(part.size(), out.size());
    std::memcpy(out.data(), part.data(), n);
    out = out.subspan(n);
  }
}

/// Memory reserved ahead for a view's reassembly: the announced total is the peer's word.
constexpr std::uint64_t most_reserved = std::uint64_t{1} << 24;

}  // namespace

void channel_core::deliver() {
  if (delivery_paused_ || (ready_.empty() && !parked_offer_ && !failed_ && !rx_.peer_closed())) return;
  credit_due_ = false;
  while ((!ready_.empty() || parked_offer_) && deliver_front()) {
    if (credit_due_ && !ready_.empty() && !receives_.empty()) {
      // Let the credit (and its doorbell) go out before copying more: the peer may be waiting
      // for it to write the rest of a message. next_batch() resumes here.
      delivery_paused_ = true;
      return;
    }
  }
  end_receives();
}

std::optional<std::uint64_t> channel_core::receive_at_once(const detail::scatter& into) {
  if (!receives_.empty() || ready_.empty() || delivery_paused_ || discarding_ || partial_ || parked_offer_ || lent_)
    return {};
  const inbound_frame& f = ready_.front();
  if (f.kind != frame_kind::data || f.payload.size() > into.length) return {};
  const std::uint64_t length = f.payload.size();
  copy_into(into, 0, f.payload);
  ++counters_.messages_received;
  counters_.bytes_received += length;
  release_front();
  end_of_input();
  return length;
}

void channel_core::release_front() {
  const frame_token token = ready_.front().token;
  ready_.pop_front();
  // Delivery never runs inside take(), so the poll's event list is free to reuse.
  rx_events_.clear();
  rx_.release(token, rx_events_);
  take(rx_events_);
}

void channel_core::finish_front(std::error_code ec, std::uint64_t length) {
  pending_receive& op = receives_.front();
  if (lent_ && lent_->receive_id == op.id) {
    // Out of the peer's reach before the handler runs and the buffer may go.
    if (lent_->region) out_.push_back(release_region{lent_->region->region});
    lent_ = std::exchange(lent_ahead_, std::nullopt);
  }
  if (op.view) {
    complete(view_done{op.id, ec, {}, {}, {}, false});
  } else {
    if (!ec) {
      ++counters_.messages_received;
      counters_.bytes_received += length;
    }
    // A discarded message still tells its size: the caller learns what buffer it needed.
    const bool sized = !ec || ec == error::message_size;
    complete(receive_done{op.id, ec, sized ? length : 0});
  }
  receives_.pop_front();
}

bool channel_core::deliver_front() {
  if (parked_offer_) {
    if (!lent_) return deliver_parked_offer();
    lend_ahead_if_posted();
  }
  if (ready_.empty()) return false;
  const inbound_frame f = ready_.front();
  const bool last = ends_message(f.kind);
  if (discarding_) {
    if (last) discarding_ = false;
    release_front();
    return true;
  }
  if (receives_.empty()) return false;
  if (lent_ && !lent_->region) return false;  // the driver is asked for the buffer
  if (f.kind == frame_kind::direct_done) return deliver_direct_done(f);
  if (lent_) {
    // The buffer is lent: only the offer's DIRECT_DONE may come next, or the next offer ahead
    // of it (rx_ let that through only once the lent buffer was granted).
    if (f.kind != frame_kind::direct_offer || parked_offer_ || lent_ahead_) return refuse_frames();
    parked_offer_ = f;
    release_front();
    lend_ahead_if_posted();
    return true;
  }
  if (f.kind == frame_kind::direct_offer) return deliver_offer(f);
  pending_receive& op = receives_.front();
  if (partial_ && !op.started() && !resume_partial(op)) return true;

  if (f.kind == frame_kind::data) {
    if (op.view) {
      // The frame stays in the ring until the view lets go of it.
      ready_.pop_front();
      ++counters_.messages_received;
      counters_.bytes_received += f.payload.size();
      complete(view_done{op.id, {}, f.token, f.payload, {}, true});
      receives_.pop_front();
      return true;
    }
    const bool fits = f.payload.size() <= op.into.length;
    if (fits) copy_into(op.into, 0, f.payload);
    release_front();
    finish_front(fits ? std::error_code{} : make_error_code(error::message_size), f.payload.size());
    return true;
  }

  if (f.kind == frame_kind::frag_first) {
    op.filled = 0;
    op.message_length = f.message_length;
    if (!op.view && f.message_length > op.into.length) {
      discarding_ = true;
      release_front();
      finish_front(make_error_code(error::message_size), f.message_length);
      return true;
    }
    if (op.view) op.assembled.reserve(std::min(f.message_length, most_reserved));
  }
  if (op.view) {
    op.assembled.insert(op.assembled.end(), f.payload.begin(), f.payload.end());
  } else {
    copy_into(op.into, op.filled, f.payload);
  }
  op.filled += f.payload.size();
  release_front();
  if (!last) return true;
  if (op.view) {
    ++counters_.messages_received;
    counters_.bytes_received += op.filled;
    complete(view_done{op.id, {}, {}, {}, std::move(op.assembled), false});
    receives_.pop_front();
  } else {
    finish_front({}, op.filled);
  }
  return true;
}

void channel_core::keep_partial(pending_receive& op) {
  partial_message kept{std::move(op.assembled), op.message_length};
  if (!op.view) {
    // The caller's buffers are theirs again once the cancellation completes: copied out.
    kept.bytes.resize(op.filled);
    copy_from(op.into, kept.bytes);
  }
  partial_ = std::move(kept);
}

bool channel_core::resume_partial(pending_receive& op) {
  partial_message kept = std::move(*std::exchange(partial_, std::nullopt));
  op.message_length = kept.length;
  op.filled = kept.bytes.size();
  if (op.view) {
    op.assembled = std::move(kept.bytes);
    op.assembled.reserve(std::min(kept.length, most_reserved));
    return true;
  }
  if (kept.length > op.into.length) {
    discarding_ = true;
    finish_front(make_error_code(error::message_size), kept.length);
    return false;
  }
  copy_into(op.into, 0, kept.bytes);
  return true;
}

bool channel_core::deliver_offer(const inbound_frame& f) {
  if (!may_write()) return false;  // no answer can reach the peer: the message never comes
  lend_or_decline(f, 0);
  release_front();
  return !lent_;  // declined: on with the ring; lent: on with the driver's answer (lent() or fetched())
}

bool channel_core::deliver_parked_offer() {
  if (receives_.empty() || !may_write()) return false;
  lend_or_decline(*std::exchange(parked_offer_, std::nullopt), 0);
  return !lent_;
}

void channel_core::lend_ahead_if_posted() {
  if (!lent_ || !lent_->region || lent_ahead_ || receives_.size() < 2 || !may_write()) return;
  lend_or_decline(*std::exchange(parked_offer_, std::nullopt), 1);
}

void channel_core::lend_or_decline(const inbound_frame& f, std::size_t index) {
  const pending_receive& op = receives_[index];
  // One contiguous buffer that takes the whole message; otherwise the ring carries it (and a
  // buffer too small gets message_size from there, as for any message).
  const bool lendable = !op.view && op.into.is_single && op.into.length >= f.message_length;
  if (!lendable) return answer_offer(f.offer_id, std::nullopt, 0);
  (index == 0 ? lent_ : lent_ahead_) = lending{f.offer_id, op.id, f.message_length, std::nullopt};
  const auto memory = op.into.single.first(f.message_length);
  if (f.fetch_source != 0) {
    out_.push_back(fetch_message{f.offer_id, f.fetch_source, f.guard_address, f.guard_value, memory});
  } else {
    out_.push_back(lend_buffer{f.offer_id, memory});
  }
}

bool channel_core::deliver_direct_done(const inbound_frame& f) {
  // A DONE for an offer we declined.
  if (!lent_ || lent_->offer_id != f.offer_id || receives_.front().id != lent_->receive_id) return refuse_frames();
  release_front();
  ++counters_.direct_messages_received;
  finish_front({}, lent_->length);
  // The sender's send completes on this word unless it did when its bytes left.
  std::byte receipt[8];
  put(receipt, f.offer_id);
  place_control(control_block::receipt_offset, receipt);
  doorbell_due_ = true;
  return true;
}

bool channel_core::refuse_frames() {
  // Nothing the peer wrote is handed out after its lie, whole messages included.
  ready_.clear();
  fail(make_error_code(error::protocol_violation));
  return false;
}

void channel_core::lent(std::uint64_t offer_id, std::optional<lent_region> region) {
  std::optional<lending>& l = lent_ahead_ && lent_ahead_->offer_id == offer_id ? lent_ahead_ : lent_;
  if (!l || l->offer_id != offer_id || l->region || failed_) {
    // Its receive ended meanwhile (cancelled by teardown, or the channel failed).
    if (region) out_.push_back(release_region{region->region});
    if (l && l->offer_id == offer_id && !l->region) l.reset();
    return end_of_input();
  }
  const std::uint64_t length = l->length;
  if (region) {
    l->region = region;
  } else {
    l.reset();
  }
  answer_offer(offer_id, region, region ? length : 0);
  deliver();
  end_of_input();
}

void channel_core::fetched(std::uint64_t offer_id, bool whole) {
  if (!lent_ || lent_->offer_id != offer_id || lent_->region || failed_) {
    if (lent_ && lent_->offer_id == offer_id && !lent_->region) lent_.reset();
    return end_of_input();
  }
  const std::uint64_t length = std::exchange(lent_, std::nullopt)->length;
  if (!whole) {
    answer_offer(offer_id, std::nullopt, 0);
  } else {
    rx_.offer_fetched();
    ++counters_.direct_messages_received;
    finish_front({}, length);
    // The whole answer at once: the sender's send completes on it, nothing more is written.
    const auto bytes = encode_lend({offer_id, ack_status::received, 0, 0, length});
    place_control(control_block::lend_offset, std::span(bytes).first(lend_layout::tail));
    place_control(control_block::lend_offset + lend_layout::tail, std::span(bytes).subspan(lend_layout::tail));
    doorbell_due_ = true;
  }
  deliver();
  end_of_input();
}

void channel_core::answer_offer(std::uint64_t offer_id, const std::optional<lent_region>& region,
                                std::uint64_t length) {
  lend_record answer{offer_id, ack_status::denied, 0, 0, 0};
  if (region) {
    answer = lend_record{offer_id, ack_status::granted, region->address, region->key, length};
    rx_.offer_lent(offer_id);
  }
  // As an ack: head and fields, then the tail in a write of its own.
  const auto bytes = encode_lend(answer);
  place_control(control_block::lend_offset, std::span(bytes).first(lend_layout::tail));
  place_control(control_block::lend_offset + lend_layout::tail, std::span(bytes).subspan(lend_layout::tail));
  if (region && may_write()) out_.push_back(reached{step::buffer_lent});
  doorbell_due_ = true;
}

void channel_core::end_receives() {
  if (receives_.empty()) return;
  std::error_code end;
  if (rx_.peer_closed() && ready_.empty()) {
    end = make_error_code(error::end_of_stream);
  } else if (failed_) {
    // Whole messages still in the ring are handed out first; a partial one never is.
    if (std::any_of(ready_.begin(), ready_.end(), [](const inbound_frame& f) { return ends_message(f.kind); })) return;
    ready_.clear();
    partial_.reset();
    end = failed_;
  }
  if (!end) return;
  while (!receives_.empty()) finish_front(end, 0);
}

}  // namespace bellows::proto
