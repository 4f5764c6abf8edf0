#include "reactor/channel_state.hpp"

#include "reactor/protocol_step.hpp"

#include "proto/shared_access.hpp"
#include "reactor/reactor.hpp"

#include <bellows/error.hpp>

#include <asio/error.hpp>
#include <asio/post.hpp>

#include <algorithm>
#include <cstring>

namespace bellows::detail {
namespace {

std::error_code aborted() { return asio::error::operation_aborted; }

tier_event::what public_kind(proto::retier_event::what kind) {
  switch (kind) {
    case proto::retier_event::what::requested: return tier_event::what::requested;
    case proto::retier_event::what::granted: return tier_event::what::granted;
    case proto::retier_event::what::denied: return tier_event::what::denied;
    case proto::retier_event::what::timed_out: return tier_event::what::timed_out;
  }
  return tier_event::what::requested;
}

/// Copies `bytes` into the scatter list starting at message offset `at`.
void copy_into(const scatter& into, std::uint64_t at, std::span<const std::byte> bytes) {
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

}  // namespace

proto::outcome<std::shared_ptr<channel_state>> channel_state::make(reactor& r, std::shared_ptr<fabric::link> link,
                                                                   const fabric::channel_setup& setup,
                                                                   const channel_options& local) {
  auto table = proto::tier_table::make(setup.tiers);
  if (!table) return table.failure();
  proto::direction_options options{*table, local.ack_timeout, local.idle_shrink_after, local.retry_after_denial,
                                   std::min(local.max_message_size, setup.max_message_size)};
  return std::shared_ptr<channel_state>(
      new channel_state(r, std::move(link), setup, std::move(options), local.on_tier_event));
}

channel_state::channel_state(reactor& r, std::shared_ptr<fabric::link> link, const fabric::channel_setup& setup,
                             proto::direction_options options, std::function<void(const tier_event&)> on_tier_event)
    : reactor_(r),
      link_(std::move(link)),
      setup_(setup),
      options_(std::move(options)),
      tx_(options_, proto::remote_ring{setup.peer_ring.key, setup.peer_ring.address, 0, 0},
          proto::remote_window{setup.peer_window_key, setup.peer_window_begin, setup.peer_window_end,
                               setup.peer_window_any_key},
          now()),
      rx_(options_, proto::local_ring{setup.ring.handle, setup.ring.key, setup.ring.address, setup.ring.data, 0, 0}),
      on_tier_event_(std::move(on_tier_event)) {
  reactor_.add_channel(this);
  link_->attach(setup_.local_id, this);
}

channel_state::~channel_state() {
  std::vector<std::uint64_t> regions{setup_.control.handle};
  for (const auto& ring : rx_.live_rings()) regions.push_back(ring.region);
  detach();
  link_->retire(setup_.local_id, std::move(regions));
  if (!reactor_gone_) reactor_.remove_channel(this);
}

proto::clock_time channel_state::now() { return std::chrono::steady_clock::now().time_since_epoch(); }
proto::clock_time channel_state::now_for_deadlines() const {
  return reactor_gone_ ? now() : reactor_.now_for_deadlines();
}

asio::any_io_executor channel_state::executor() const { return reactor_.executor(); }

void channel_state::op_done() {
  if (!reactor_gone_) reactor_.op_finished();
}

bool channel_state::reactor_takes_completions() const noexcept {
  return !reactor_gone_ && reactor_.takes_completions();
}
void channel_state::defer(std::unique_ptr<ready_completion> ready) { reactor_.defer(std::move(ready)); }

void channel_state::report(const tier_event& e) {
  if (on_tier_event_ && !reactor_gone_) asio::post(reactor_.executor(), [fn = on_tier_event_, e] { fn(e); });
}

void channel_state::start_send(std::uint64_t id, gather message, size_completion done) {
  reactor_.op_started();
  if (!is_open()) {
    done.post(aborted_ ? make_error_code(error::channel_closed) : failed_, 0);
    return op_done();
  }
  if (message.length > options_.max_message_size) {
    // The peer would have to break the channel over it; refusing it here loses nothing else.
    done.post(make_error_code(error::message_size), 0);
    return op_done();
  }
  auto op = std::make_unique<send_op>(send_op{id, std::move(message), std::move(done)});
  const proto::gather_list list{op->message.parts(), op->message.length};
  sends_.push_back(std::move(op));
  tx_events_.clear();
  const auto t = now_for_deadlines();
  tx_.submit(id, list, t, tx_events_);
  tx_.step(setup_.control.data, t, tx_events_);
  execute(tx_events_);
  after_poll();
}

send_status channel_state::try_send(const gather& message, std::error_code& ec) {
  ec = {};
  if (!is_open()) {
    ec = aborted_ ? make_error_code(error::channel_closed) : failed_;
    return send_status::no_credits;
  }
  if (message.length > options_.max_message_size) {
    ec = make_error_code(error::message_size);
    return send_status::no_credits;
  }
  tx_events_.clear();
  const auto t = now_for_deadlines();
  tx_.step(setup_.control.data, t, tx_events_);
  // The core keeps the gather list only until the frames are written, which happens here.
  auto result = tx_.try_send({message.parts(), message.length}, t, tx_events_);
  execute(tx_events_);
  after_poll();
  if (!result) {
    ec = result.failure();
    return send_status::no_credits;
  }
  switch (*result) {
    case proto::try_result::written:
      ++counters_.messages_sent;
      counters_.bytes_sent += message.length;
      return send_status::sent;
    case proto::try_result::enlarging: return send_status::enlarging;
    case proto::try_result::no_room: return send_status::no_credits;
    case proto::try_result::too_large: ec = make_error_code(error::message_size); return send_status::no_credits;
  }
  return send_status::no_credits;
}

void channel_state::start_receive(std::uint64_t id, scatter into, size_completion done) {
  reactor_.op_started();
  receive_op op{id, std::move(into), std::move(done), {}, 0, {}, false};
  receives_.push_back(std::move(op));
  deliver();
  if (!receives_.empty()) reactor_.activate(this);
}

void channel_state::start_receive_view(std::uint64_t id, view_completion done) {
  reactor_.op_started();
  receive_op op{id, {}, {}, std::move(done), 0, {}, false};
  receives_.push_back(std::move(op));
  deliver();
  if (!receives_.empty()) reactor_.activate(this);
}

void channel_state::start_close(std::uint64_t id, close_completion done) {
  reactor_.op_started();
  if (close_ || close_result_ || !is_open()) {
    const auto ec = close_result_ ? *close_result_
                    : close_      ? make_error_code(error::invalid_argument)
                    : aborted_    ? make_error_code(error::channel_closed)
                                  : failed_;
    done.post(ec);
    return op_done();
  }
  close_.emplace(std::move(done));
  close_id_ = id;
  tx_events_.clear();
  tx_.close(now(), tx_events_);
  tx_.step(setup_.control.data, now(), tx_events_);
  execute(tx_events_);
  after_poll();
}

void channel_state::cancel(std::uint64_t id) {
  if (close_ && close_id_ == id) {
    close_->post(aborted());
    close_.reset();
    return op_done();
  }
  auto r = std::find_if(receives_.begin(), receives_.end(), [&](const receive_op& op) { return op.id == id; });
  if (r != receives_.end()) {
    // A receive that already took part of a fragmented message leaves the rest to be discarded.
    if (r->started) discarding_ = true;
    complete_receive(*r, aborted());
    receives_.erase(r);
    return;
  }
  auto s = std::find_if(sends_.begin(), sends_.end(), [&](const auto& op) { return op->id == id; });
  if (s != sends_.end() && tx_.cancel(id)) {
    (*s)->done.post(aborted(), 0);
    sends_.erase(s);
    op_done();
  }
}

void channel_state::cancel_all() {
  std::vector<std::uint64_t> ids;
  if (close_) ids.push_back(close_id_);
  for (const auto& op : receives_) ids.push_back(op.id);
  for (const auto& op : sends_) ids.push_back(op->id);
  for (auto id : ids) cancel(id);
}

void channel_state::complete_receive(receive_op& op, std::error_code ec) {
  if (op.wants_view()) {
    complete(op.done_view, ec, message_view{});
  } else {
    complete(op.done_size, ec, ec ? 0 : op.filled);
  }
  op_done();
}

void channel_state::abort() {
  if (aborted_) return;
  aborted_ = true;
  const auto closed = make_error_code(error::channel_closed);
  while (!receives_.empty()) {
    complete_receive(receives_.front(), closed);
    receives_.pop_front();
  }
  fail(closed);
}

void channel_state::release(frame_ref frame) {
  rx_events_.clear();
  rx_.release({frame.ring_epoch, frame.ordinal}, rx_events_);
  execute(rx_events_);
}

channel_stats channel_state::stats() const {
  channel_stats s = counters_;
  s.send_tier = tx_.tier();
  s.receive_tier = rx_.tier();
  s.registered_bytes = setup_.control.length;
  s.registered_bytes_by_tier.assign(options_.tiers.size(), 0);
  for (const auto& ring : rx_.live_rings()) {
    const auto bytes = options_.tiers[ring.tier].ring_bytes();
    s.registered_bytes += bytes;
    s.registered_bytes_by_tier[ring.tier] += bytes;
  }
  return s;
}

void channel_state::set_pressure(bool on) {
  if (failed_ || (on && rx_.tier() == 0)) return;
  proto::receiver_events ev;
  rx_.set_pressure(on, ev);
  if (!ev.flags_word) return;
  // An idle sender reads its control block only when rung.
  ev.ring_doorbell = true;
  execute(ev);
}

void channel_state::on_doorbell() { reactor_.activate(this); }

void channel_state::on_peer_detached() {
  peer_detached_ = true;
  // Everything the peer wrote before it detached is in place: take it, then stop.
  poll();
  fail(make_error_code(error::connection_reset));
}

void channel_state::on_link_failed(std::error_code ec) {
  peer_detached_ = true;
  detached_ = true;  // no socket left to say it on
  poll();
  fail(ec == error::protocol_violation ? ec : make_error_code(error::connection_reset));
}

void channel_state::poll(proto::clock_time t) {
  if (!failed_) {
    tx_events_.clear();
    tx_.step(setup_.control.data, t, tx_events_);
    execute(tx_events_);
  }
  if (!failed_) {
    rx_events_.clear();
    rx_.poll(rx_events_);
    execute(rx_events_);
  }
  deliver();
  after_poll();
}

void channel_state::after_poll() {
  if (reactor_gone_) return;
  reactor_.watch(this, !failed_ && (tx_.awaiting_ack() || tx_.stalled_on_credit()));
  arm_timer();
}

void channel_state::arm_timer() {
  const auto deadline = failed_ ? std::nullopt : tx_.next_deadline();
  if (deadline == timer_deadline_) return;
  timer_deadline_ = deadline;
  if (!deadline) {
    if (timer_) timer_->cancel();
    return;
  }
  if (!timer_) timer_.emplace(reactor_.io());
  timer_->expires_at(std::chrono::steady_clock::time_point(
      std::chrono::duration_cast<std::chrono::steady_clock::duration>(*deadline)));
  timer_->async_wait([weak = weak_from_this()](std::error_code ec) {
    auto self = weak.lock();
    if (ec || !self) return;
    self->timer_deadline_.reset();
    self->poll();
  });
}

void channel_state::disarm_timer() {
  timer_deadline_.reset();
  if (timer_) timer_->cancel();
}

void channel_state::write_frame(const proto::frame_write& w) {
  const auto header = proto::encode_header(w.header);
  pieces_.clear();
  pieces_.emplace_back(header);
  if (w.inline_length != 0) pieces_.emplace_back(w.inline_payload.data(), w.inline_length);
  proto::for_each_piece(w.source, w.source_offset, w.source_length, [&](auto p) { pieces_.push_back(p); });
  std::error_code ec = link_->write({w.ring.key, w.ring.address + w.offset}, pieces_);
  if (!ec) {
    const auto trailer = proto::encode_trailer(w.header.seq);
    const std::span<const std::byte> piece[] = {trailer};
    ec = link_->write({w.ring.key, w.ring.address + w.trailer_at()}, piece);
  }
  if (ec) fail(ec);
}

void channel_state::reach_after(proto::frame_kind written) {
  switch (written) {
    case proto::frame_kind::enlarge_req: return reach(protocol_step::enlarge_request_written);
    case proto::frame_kind::shrink_req: return reach(protocol_step::shrink_request_written);
    case proto::frame_kind::frag_first:
    case proto::frame_kind::frag_more: return reach(protocol_step::fragment_written);
    case proto::frame_kind::close: return reach(protocol_step::close_written);
    default: return;
  }
}

void channel_state::write_control(std::size_t offset, std::span<const std::byte> bytes) {
  if (detached_) return;
  const std::span<const std::byte> piece[] = {bytes};
  const fabric::remote_address at{setup_.peer_control.key, setup_.peer_control.address + offset};
  if (auto ec = link_->write(at, piece)) fail(ec);
}

void channel_state::execute(proto::sender_events& ev) {
  for (const auto& w : ev.writes) {
    if (failed_ || detached_) break;
    if (w.header.kind == proto::frame_kind::enlarge_req) reach(protocol_step::enlarge_request_due);
    write_frame(w);
    reach_after(w.header.kind);
  }
  if (ev.ring_doorbell && !failed_ && !detached_) link_->ring_doorbell(setup_.peer_id);
  for (const auto& c : ev.completions) {
    const std::error_code ec = failed_ && !c.ec ? failed_ : c.ec;
    if (!ec) {
      ++counters_.messages_sent;
      counters_.bytes_sent += c.bytes;
    }
    if (c.id == 0) continue;  // a try_send
    auto it = std::find_if(sends_.begin(), sends_.end(), [&](const auto& op) { return op->id == c.id; });
    if (it == sends_.end()) continue;
    auto op = std::move(*it);
    sends_.erase(it);
    complete(op->done, ec, ec ? 0 : c.bytes);
    op_done();
  }
  for (const auto& r : ev.retiers) {
    using what = proto::retier_event::what;
    if (r.kind == what::granted) ++(r.shrink ? counters_.shrinks : counters_.enlargements);
    if (r.kind == what::denied) ++counters_.denials;
    if (r.kind == what::timed_out) ++counters_.ack_timeouts;
    const auto t = now();
    if (r.kind == what::requested) requested_at_ = t;
    report({public_kind(r.kind), r.shrink, r.from_tier, r.to_tier, r.trigger_length,
            r.kind == what::requested ? std::chrono::nanoseconds{0} : t - requested_at_});
  }
  if (ev.closed) {
    close_result_ = *ev.closed;
    if (close_) {
      complete(*close_, *ev.closed);
      close_.reset();
      op_done();
    }
  }
  if (ev.failure) fail(*ev.failure);
}

void channel_state::execute(proto::receiver_events& ev) {
  for (const auto& f : ev.frames) ready_.push_back(f);
  if (ev.credit_word) {
    std::byte word[8];
    proto::put(word, *ev.credit_word);
    write_control(proto::control_block::credit_offset, word);
  }
  if (ev.flags_word) {
    std::byte word[8];
    proto::put(word, *ev.flags_word);
    write_control(proto::control_block::flags_offset, word);
  }
  if (ev.ack) {
    const auto ack = proto::encode_ack(*ev.ack);
    // The fault matrix needs an ack whose head is visible without its tail; a single write
    // never shows that, so only a hooked process writes the head alone first.
    if (protocol_step_hooked() && !detached_) {
      write_control(proto::control_block::ack_offset, std::span(ack).first(8));
      reach(protocol_step::ack_head_written);
    }
    write_control(proto::control_block::ack_offset, ack);
  }
  for (auto region : ev.released_regions) link_->release_region(region);
  if (ev.ring_doorbell && !failed_ && !detached_) link_->ring_doorbell(setup_.peer_id);
  if (ev.failure) fail(*ev.failure);
  if (ev.provision && !failed_) provision(*ev.provision);
}

void channel_state::provision(const proto::provision_request& request) {
  const auto started = now();
  const auto from = rx_.tier();
  const auto& g = options_.tiers[request.tier];
  auto region = link_->register_region(g.ring_bytes());
  std::optional<proto::local_ring> ring;
  if (region) ring = proto::local_ring{region->handle, region->key, region->address, region->data, request.tier, 0};
  proto::receiver_events ev;
  if (ring) reach(request.shrink ? protocol_step::shrink_ring_provisioned : protocol_step::ring_provisioned);
  rx_.provisioned(request.request_id, ring, ev);
  execute(ev);
  if (!ring) reactor_.provision_refused();
  if (ring && request.tier > 0 && reactor_.under_pressure()) set_pressure(true);
  report({ring ? tier_event::what::provisioned : tier_event::what::refused, request.shrink, from, request.tier, 0,
          now() - started});
}

void channel_state::deliver() {
  while (!ready_.empty() && deliver_front()) {
  }
  finish_receives();
}

bool channel_state::deliver_front() {
  const proto::inbound_frame f = ready_.front();
  auto release_front = [&] {
    ready_.pop_front();
    rx_events_.clear();
    rx_.release(f.token, rx_events_);
    execute(rx_events_);
  };
  const bool last = f.kind == proto::frame_kind::data || f.kind == proto::frame_kind::frag_last;
  if (discarding_) {
    if (last) discarding_ = false;
    release_front();
    return true;
  }
  if (receives_.empty()) return false;
  receive_op& op = receives_.front();
  auto finish = [&](std::error_code ec, std::uint64_t length) {
    if (!ec) {
      ++counters_.messages_received;
      counters_.bytes_received += length;
    }
    op.filled = length;
    complete_receive(op, ec);
    receives_.pop_front();
  };

  if (f.kind == proto::frame_kind::data) {
    if (op.wants_view()) {
      ready_.pop_front();
      ++counters_.messages_received;
      counters_.bytes_received += f.payload.size();
      complete(op.done_view, {},
               message_view(shared_from_this(), frame_ref{f.token.ring_epoch, f.token.ordinal}, f.payload));
      op_done();
      receives_.pop_front();
      return true;
    }
    const bool fits = f.payload.size() <= op.into.length;
    if (fits) copy_into(op.into, 0, f.payload);
    release_front();
    finish(fits ? std::error_code{} : make_error_code(error::message_size), f.payload.size());
    return true;
  }

  if (f.kind == proto::frame_kind::frag_first) {
    op.started = true;
    op.filled = 0;
    if (!op.wants_view() && f.message_length > op.into.length) {
      discarding_ = true;
      release_front();
      finish(make_error_code(error::message_size), 0);
      return true;
    }
    // The announced total is the peer's word; grow with what actually arrives.
    if (op.wants_view()) op.assembled.reserve(std::min<std::uint64_t>(f.message_length, std::uint64_t{1} << 24));
  }
  if (op.wants_view()) {
    op.assembled.insert(op.assembled.end(), f.payload.begin(), f.payload.end());
  } else {
    copy_into(op.into, op.filled, f.payload);
  }
  op.filled += f.payload.size();
  release_front();
  if (!last) return true;
  if (op.wants_view()) {
    ++counters_.messages_received;
    counters_.bytes_received += op.filled;
    complete(op.done_view, {}, message_view(std::move(op.assembled)));
    op_done();
    receives_.pop_front();
  } else {
    finish({}, op.filled);
  }
  return true;
}

void channel_state::finish_receives() {
  if (receives_.empty()) return;
  std::error_code end;
  if (rx_.peer_closed() && ready_.empty()) {
    end = make_error_code(error::end_of_stream);
  } else if (failed_) {
    // Whole messages still in the ring were handed out above; a partial one never is.
    bool complete_message_left = false;
    for (const auto& f : ready_)
      if (f.kind == proto::frame_kind::data || f.kind == proto::frame_kind::frag_last) complete_message_left = true;
    if (complete_message_left) return;
    ready_.clear();
    end = failed_;
  }
  if (!end) return;
  while (!receives_.empty()) {
    complete_receive(receives_.front(), end);
    receives_.pop_front();
  }
}

void channel_state::detach() {
  if (detached_) return;
  detached_ = true;
  link_->send_detach(setup_.peer_id);
}

void channel_state::fail(std::error_code ec) {
  if (failed_) return;
  failed_ = ec;
  proto::sender_events tx_ev;
  tx_.fail(ec, tx_ev);
  execute(tx_ev);
  proto::receiver_events rx_ev;
  rx_.fail(ec, rx_ev);
  execute(rx_ev);
  if (close_) {
    complete(*close_, ec);
    close_.reset();
    op_done();
  }
  detach();
  deliver();
  if (!reactor_gone_) reactor_.watch(this, false);
  disarm_timer();
}

void channel_state::shutdown() {
  // The io_context is going away: handlers are destroyed without being called, as Asio does.
  reactor_gone_ = true;
  sends_.clear();
  receives_.clear();
  close_.reset();
  timer_.reset();
}

// ---- entry points of the public templates ----

asio::any_io_executor executor_of(const channel_state& s) noexcept { return s.executor(); }
std::uint64_t next_operation_id(channel_state& s) noexcept { return s.next_id(); }
void start_send(channel_state& s, std::uint64_t id, gather message, size_completion done) {
  s.start_send(id, std::move(message), std::move(done));
}
void start_receive(channel_state& s, std::uint64_t id, scatter into, size_completion done) {
  s.start_receive(id, std::move(into), std::move(done));
}
void start_receive_view(channel_state& s, std::uint64_t id, view_completion done) {
  s.start_receive_view(id, std::move(done));
}
void start_close(channel_state& s, std::uint64_t id, close_completion done) { s.start_close(id, std::move(done)); }
void cancel(channel_state& s, std::uint64_t id) noexcept { s.cancel(id); }
void cancel_all(channel_state& s) noexcept { s.cancel_all(); }
send_status try_send(channel_state& s, const gather& message, std::error_code& ec) { return s.try_send(message, ec); }
void abort(channel_state& s) noexcept { s.abort(); }
bool is_open(const channel_state& s) noexcept { return s.is_open(); }
channel_stats stats_of(const channel_state& s) { return s.stats(); }
void release_frame(channel_state& s, frame_ref frame) noexcept { s.release(frame); }

}  // namespace bellows::detail
