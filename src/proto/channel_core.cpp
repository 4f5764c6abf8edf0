#include "proto/channel_core.hpp"

#include "proto/shared_access.hpp"

#include <algorithm>
#include <cstring>

namespace bellows::proto {

channel_core::channel_core(direction_options options, const core_setup& setup, clock_time now)
    : options_(std::move(options)),
      setup_(setup),
      tx_(options_, setup.peer_ring, setup.peer_window, now),
      rx_(options_, setup.ring) {}

std::error_code channel_core::closed_reason() const noexcept {
  return aborted_ ? make_error_code(error::channel_closed) : failed_;
}

bool channel_core::wants_watching() const noexcept {
  return !failed_ && (tx_.awaiting_ack() || tx_.stalled_on_credit());
}

std::optional<clock_time> channel_core::next_deadline() const noexcept {
  return failed_ ? std::nullopt : tx_.next_deadline();
}

// ---- the application's requests ----

void channel_core::send(std::uint64_t id, detail::gather&& message, clock_time now) {
  if (!is_open()) return complete(send_done{id, closed_reason(), 0, nullptr});
  if (message.length > options_.max_message_size) {
    // The peer would have to break the channel over it; refusing it here loses nothing else.
    return complete(send_done{id, make_error_code(error::message_size), 0, nullptr});
  }
  std::unique_ptr<detail::gather> ranges;
  if (spare_ranges_.empty()) {
    ranges = std::make_unique<detail::gather>(std::move(message));
  } else {
    ranges = std::move(spare_ranges_.back());
    spare_ranges_.pop_back();
    *ranges = std::move(message);
  }
  auto& op = sends_.emplace_back(pending_send{id, std::move(ranges)});
  tx_events_.clear();
  tx_.submit(id, {op.message->parts(), op.message->length, op.message->file}, now, tx_events_);
  tx_.step(setup_.control, now, tx_events_);
  take(tx_events_, now);
  end_of_input();
}

bool channel_core::send_at_once(const detail::gather& message, clock_time now) {
  if (!is_open() || !sends_.empty() || message.file.descriptor >= 0) return false;
  if (message.length > options_.max_message_size) return false;
  const gather_list whole{message.parts(), message.length, message.file};
  tx_events_.clear();
  // The credit last read usually has room; the control block is read only when it has not.
  // Read first, it could start an idle ring's shrink ahead of this message, where a queued
  // send is written first and the shrink asked for after it.
  bool written = tx_.write_at_once(whole, now, tx_events_);
  if (!written) {
    tx_.step(setup_.control, now, tx_events_);
    written = tx_.write_at_once(whole, now, tx_events_);
  }
  take(tx_events_, now);
  if (written) {
    ++counters_.messages_sent;
    counters_.bytes_sent += message.length;
  }
  end_of_input();
  return written;
}

void channel_core::refuse_send(std::uint64_t id, std::error_code ec) { complete(send_done{id, ec, 0, nullptr}); }

outcome<try_result> channel_core::try_send(const detail::gather& message, clock_time now) {
  if (!is_open()) return closed_reason();
  if (message.length > options_.max_message_size) return error::message_size;
  tx_events_.clear();
  tx_.step(setup_.control, now, tx_events_);
  // The sender keeps the range list only until the frames are written, which happens here.
  auto result = tx_.try_send({message.parts(), message.length, {}}, now, tx_events_);
  take(tx_events_, now);
  if (result && *result == try_result::written) {
    ++counters_.messages_sent;
    counters_.bytes_sent += message.length;
  }
  end_of_input();
  return result;
}

void channel_core::receive(std::uint64_t id, detail::scatter&& into) {
  receives_.push_back(pending_receive{id, std::move(into), false, 0, {}, false});
  deliver();
  end_of_input();
}

void channel_core::receive_view(std::uint64_t id) {
  receives_.push_back(pending_receive{id, {}, true, 0, {}, false});
  deliver();
  end_of_input();
}

void channel_core::close(std::uint64_t id, clock_time now) {
  if (close_id_ || close_result_ || !is_open()) {
    const auto ec = close_result_ ? *close_result_
                    : close_id_   ? make_error_code(error::invalid_argument)
                                  : closed_reason();
    return complete(close_done{id, ec});
  }
  close_id_ = id;
  tx_events_.clear();
  tx_.close(now, tx_events_);
  tx_.step(setup_.control, now, tx_events_);
  take(tx_events_, now);
  end_of_input();
}

void channel_core::cancel(std::uint64_t id) {
  if (close_id_ == id) {
    close_id_.reset();
    return complete(close_done{id, cancelled()});
  }
  auto r = std::find_if(receives_.begin(), receives_.end(), [&](const pending_receive& op) { return op.id == id; });
  if (r != receives_.end()) {
    // A buffer lent to the peer is being written: the receive completes when the message is in.
    if ((lent_ && lent_->receive_id == id) || (lent_ahead_ && lent_ahead_->receive_id == id)) return;
    // What it took of a fragmented message waits for the next receive, which gets all of it.
    if (r->started()) keep_partial(*r);
    if (r->view) {
      complete(view_done{id, cancelled(), {}, {}, {}, false});
    } else {
      complete(receive_done{id, cancelled(), 0});
    }
    receives_.erase(r);
    deliver();
    return end_of_input();
  }
  auto s = std::find_if(sends_.begin(), sends_.end(), [&](const pending_send& op) { return op.id == id; });
  if (s != sends_.end() && tx_.cancel(id)) {
    complete(send_done{id, cancelled(), 0, std::move(s->message)});
    sends_.erase(s);
  }
}

bool channel_core::next_batch(std::vector<action>& batch) {
  batch.clear();
  if (out_.empty() && finished_.empty() && std::exchange(delivery_paused_, false)) deliver();
  end_of_input();
  if (out_.empty()) return false;
  batch.swap(out_);
  return true;
}

void channel_core::recycle(std::unique_ptr<detail::gather> ranges) {
  // A few are enough: a channel rarely has more sends finishing in one batch.
  if (ranges && spare_ranges_.size() < 4) spare_ranges_.push_back(std::move(ranges));
}

void channel_core::cancel_all() {
  std::vector<std::uint64_t> ids;
  if (close_id_) ids.push_back(*close_id_);
  for (const auto& op : receives_) ids.push_back(op.id);
  for (const auto& op : sends_) ids.push_back(op.id);
  for (auto id : ids) cancel(id);
}

void channel_core::abort() {
  if (aborted_) return;
  aborted_ = true;
  const auto closed = make_error_code(error::channel_closed);
  while (!receives_.empty()) finish_front(closed, 0);
  fail(closed);
  end_of_input();
}

void channel_core::release(frame_token token) {
  receiver_events ev;
  rx_.release(token, ev);
  take(ev);
  end_of_input();
}

// ---- the driver's side ----

void channel_core::poll(clock_time now) {
  // The ring before the control block: what the peer wrote to the control block before a frame
  // (an ack, a credit) is then taken in before that frame is delivered. Read the other way
  // round, an ack and a reply that both land between the two reads left the reply's handler
  // seeing the old tier in stats().
  if (!failed_) {
    rx_events_.clear();
    rx_.poll(rx_events_);
    take(rx_events_);
  }
  if (!failed_) {
    tx_events_.clear();
    tx_.step(setup_.control, now, tx_events_);
    take(tx_events_, now);
  }
  deliver();
  end_of_input();
}

void channel_core::provisioned(const provision_request& request, std::optional<local_ring> ring, bool under_pressure) {
  const auto from = rx_.tier();
  const bool answering = ring && !failed_;
  if (answering) out_.push_back(reached{request.shrink ? step::shrink_ring_provisioned : step::ring_provisioned});
  receiver_events ev;
  rx_.provisioned(request.request_id, ring, ev);
  take(ev);
  if (!failed_) {
    using what = tier_event::what;
    out_.push_back(tier_changed{{ring ? what::provisioned : what::refused, request.shrink, from, request.tier, 0, {}}});
  }
  if (answering && request.tier > 0 && under_pressure) set_pressure(true);
  deliver();
  end_of_input();
}

void channel_core::set_pressure(bool on) {
  if (failed_ || (on && rx_.tier() == 0)) return;
  receiver_events ev;
  rx_.set_pressure(on, ev);
  if (!ev.flags_word) return;
  // An idle sender reads its control block only when rung.
  ev.ring_doorbell = true;
  take(ev);
  end_of_input();
}

void channel_core::set_polled(bool on) {
  if (failed_) return;
  receiver_events ev;
  rx_.set_polled(on, ev);
  take(ev);
  end_of_input();
}

void channel_core::peer_detached(clock_time now) {
  settle(now);
  fail(make_error_code(error::connection_reset));
  end_of_input();
}

void channel_core::link_failed(std::error_code ec, clock_time now) {
  detached_ = true;  // no socket left to say it on
  settle(now);
  fail(as_channel_failure(ec));
  end_of_input();
}

std::error_code channel_core::as_channel_failure(std::error_code ec) const {
  // A write refused by the peer's memory breaks the protocol, unless it went into a buffer
  // the peer lent: a peer that tears its channel down takes that buffer back mid-write (rdma).
  if (ec == error::protocol_violation && !tx_.writing_into_lent_buffer()) return ec;
  return make_error_code(error::connection_reset);
}

void channel_core::settle(clock_time now) {
  // Everything the peer wrote before it went is in place: take it, write nothing.
  peer_gone_ = true;
  if (failed_) return;
  tx_events_.clear();
  tx_.settle(setup_.control, now, tx_events_);
  take(tx_events_, now);
  if (failed_) return;
  rx_events_.clear();
  rx_.poll(rx_events_);
  take(rx_events_);
  deliver();
}

void channel_core::handed_over(std::uint64_t offer_id, bool left, clock_time now) {
  if (!left || failed_) return;
  tx_events_.clear();
  tx_.handed_over(offer_id, tx_events_);
  // What the completion lets go, and the answer to the offer behind it, which may have come
  // while the bytes left.
  tx_.step(setup_.control, now, tx_events_);
  take(tx_events_, now);
  end_of_input();
}

void channel_core::write_failed(std::error_code ec) {
  // What the file said stands; the link's own failures read as the channel's.
  const bool link_failure = ec == error::protocol_violation || ec == error::connection_reset;
  fail(link_failure ? as_channel_failure(ec) : ec);
  end_of_input();
}

void channel_core::fail(std::error_code ec) {
  if (failed_) return;
  failed_ = ec;
  sender_events tx_ev;
  tx_.fail(ec, tx_ev);
  take(tx_ev, clock_time{});
  receiver_events rx_ev;
  rx_.fail(ec, rx_ev);
  take(rx_ev);
  if (close_id_) {
    complete(close_done{*close_id_, ec});
    close_id_.reset();
  }
  if (!detached_) {
    detached_ = true;
    out_.push_back(detach{});
  }
  deliver();
}

channel_stats channel_core::stats() const {
  channel_stats s = counters_;
  s.send_tier = tx_.tier();
  s.receive_tier = rx_.tier();
  s.credit_stalls = tx_.credit_stalls();
  s.registered_bytes = setup_.control_bytes;
  s.registered_bytes_by_tier.assign(options_.tiers.size(), 0);
  for (const auto& ring : rx_.live_rings()) {
    const auto bytes = options_.tiers[ring.tier].ring_bytes();
    s.registered_bytes += bytes;
    s.registered_bytes_by_tier[ring.tier] += bytes;
  }
  return s;
}

}  // namespace bellows::proto
