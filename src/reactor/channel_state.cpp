#include "reactor/channel_state.hpp"

#include "proto/fetch_guard.hpp"
#include "reactor/reactor.hpp"

#include <bellows/error.hpp>

#include <asio/error.hpp>
#include <asio/post.hpp>

#include <algorithm>

namespace bellows::detail {

const asio::io_context* channel_state::context_kept_busy() const noexcept {
  return reactor_gone_.load(std::memory_order_acquire) ? nullptr : &reactor_.io();
}

proto::outcome<std::shared_ptr<channel_state>> channel_state::make(reactor& r, asio::any_io_executor executor,
                                                                   std::shared_ptr<fabric::link> link,
                                                                   const fabric::channel_setup& setup,
                                                                   const channel_options& local) {
  auto table = proto::tier_table::make(setup.tiers);
  if (!table) return table.failure();
  proto::direction_options options{*table, local.ack_timeout, local.idle_shrink_after, local.retry_after_denial,
                                   std::min(local.max_message_size, setup.max_message_size)};
  if (link->can_lend() || link->peer_fetches()) {
    // Where the receiver would read the message from our memory (shm) rather than lend its
    // buffer, only when asked: see channel_options::one_copy_above.
    const std::uint64_t largest_frame = table->max_message(table->largest());
    const std::uint64_t above = local.one_copy_above.value_or(link->can_lend() ? largest_frame : UINT64_MAX);
    options.offer_direct_above = std::max(above, largest_frame);
  }
  options.offers_are_fetched = link->peer_fetches();
  // The reactor may be polling the channel on another thread while its last owner lets go:
  // the whole destruction, members included, happens under the lock.
  return std::shared_ptr<channel_state>(
      new channel_state(r, std::move(executor), std::move(link), setup, std::move(options), local.on_tier_event),
      [](channel_state* s) {
        auto held = s->hold();
        delete s;
      });
}

namespace {

proto::core_setup core_setup_of(const fabric::channel_setup& s) {
  return {proto::local_ring{s.ring.handle, s.ring.key, s.ring.address, s.ring.data, 0, 0},
          s.control.data,
          s.control.length,
          s.peer_control.key,
          s.peer_control.address,
          proto::remote_ring{s.peer_ring.key, s.peer_ring.address, 0, 0},
          proto::remote_window{s.peer_window_key, s.peer_window_begin, s.peer_window_end, s.peer_window_any_key}};
}

}  // namespace

channel_state::channel_state(reactor& r, asio::any_io_executor executor, std::shared_ptr<fabric::link> link,
                             const fabric::channel_setup& setup, proto::direction_options options,
                             std::function<void(const tier_event&)> on_tier_event)
    : reactor_(r),
      executor_(std::move(executor)),
      link_(std::move(link)),
      setup_(setup),
      core_(std::move(options), core_setup_of(setup), now()),
      on_tier_event_(std::move(on_tier_event)) {
  gathers_writes_ = link_->gathers_writes();
  reactor_.add_channel(this);
  link_->attach(setup_.local_id, this);
}

channel_state::~channel_state() {
  for (const void* send : held_sends_) link_->release_held(send);
  std::vector<std::uint64_t> regions{setup_.control.handle};
  for (const auto& ring : core_.incoming().live_rings()) regions.push_back(ring.region);
  if (!core_.detached()) link_->send_detach(setup_.peer_id);
  link_->retire(setup_.local_id, std::move(regions));
  if (!reactor_gone_) reactor_.remove_channel(this);
}

proto::clock_time channel_state::now() { return std::chrono::steady_clock::now().time_since_epoch(); }
proto::clock_time channel_state::now_for_deadlines() const {
  return reactor_gone_ ? now() : reactor_.now_for_deadlines();
}

std::unique_lock<reactor_lock> channel_state::hold() const {
  if (reactor_gone_.load(std::memory_order_acquire)) return {};
  return reactor_.hold();
}

void channel_state::op_done() {
  if (!reactor_gone_) reactor_.op_finished();
}

namespace {

/// The core's errors in Asio's terms: a cancelled operation ends with operation_aborted.
std::error_code for_asio(std::error_code ec) {
  if (!ec) return ec;  // most often, and cheaper than building the error to compare with
  return ec == proto::cancelled() ? std::error_code(asio::error::operation_aborted) : ec;
}

}  // namespace

template <class... Args>
void channel_state::complete(completion<Args...>& done, std::type_identity_t<Args>... args) {
  if (!reactor_gone_ && reactor_.takes_completions()) {
    reactor_.defer(done.bind(std::move(args)...));
  } else {
    done.post(std::move(args)...);
  }
  op_done();
}

// ---- requests ----

void channel_state::start_send(std::uint64_t id, gather&& message, size_completion done) {
  reactor_.op_started();
  if (core_.send_at_once(message, now_for_deadlines())) {
    // The message is in the peer's ring once the writes are carried out, as a queued send's is
    // when its send_done comes: no record of the operation, no action to complete it.
    run_and_rearm();
    return complete(done, for_asio(write_error_), write_error_ ? 0 : message.length);
  }
  sized_.add(id, std::move(done));
  const fabric::file_piece file{message.file.descriptor, message.file.offset, message.length};
  if (auto problem = file.descriptor >= 0 ? fabric::check_file_piece(file) : std::error_code{})
    core_.refuse_send(id, problem);
  else
    core_.send(id, std::move(message), now_for_deadlines());
  run_and_rearm();
}

send_status channel_state::try_send(const gather& message, std::error_code& ec) {
  auto result = core_.try_send(message, now_for_deadlines());
  run_and_rearm();
  ec = {};
  if (result && *result == proto::try_result::written && core_.failed()) result = core_.closed_reason();
  if (!result) {
    ec = result.failure();
    return send_status::no_credits;
  }
  switch (*result) {
    case proto::try_result::written: return send_status::sent;
    case proto::try_result::enlarging: return send_status::enlarging;
    case proto::try_result::no_room: return send_status::no_credits;
    case proto::try_result::too_large: ec = make_error_code(error::message_size); return send_status::no_credits;
  }
  return send_status::no_credits;
}

void channel_state::start_receive(std::uint64_t id, scatter&& into, size_completion done) {
  reactor_.op_started();
  if (const auto length = core_.receive_at_once(into)) {
    run();  // the credit the copy freed goes back to the peer
    return complete(done, std::error_code{}, *length);
  }
  sized_.add(id, std::move(done));
  core_.receive(id, std::move(into));
  run();
  if (core_.receiving()) reactor_.activate(this);
}

void channel_state::start_receive_view(std::uint64_t id, view_completion done) {
  reactor_.op_started();
  views_.add(id, std::move(done));
  core_.receive_view(id);
  run();
  if (core_.receiving()) reactor_.activate(this);
}

void channel_state::start_close(std::uint64_t id, close_completion done) {
  reactor_.op_started();
  closes_.add(id, std::move(done));
  core_.close(id, now());
  run_and_rearm();
}

void channel_state::cancel(std::uint64_t id) {
  core_.cancel(id);
  run_and_rearm();
}

void channel_state::cancel_all() {
  core_.cancel_all();
  run_and_rearm();
}

void channel_state::abort() {
  core_.abort();
  run_and_rearm();
}

void channel_state::release(frame_ref frame) {
  core_.release({frame.ring_epoch, frame.ordinal});
  run();
}

// ---- the reactor's side ----

void channel_state::set_pressure(bool on) {
  core_.set_pressure(on);
  run_and_rearm();
}

void channel_state::on_doorbell() { reactor_.activate(this); }

void channel_state::on_peer_detached() {
  core_.peer_detached(now());
  run_and_rearm();
}

void channel_state::on_link_failed(std::error_code ec) {
  core_.link_failed(ec, now());
  run_and_rearm();
}

bool channel_state::poll(proto::clock_time t) {
  core_.poll(t);
  const bool found = core_.has_output();
  run_and_rearm();
  return found;
}

bool channel_state::may_be_polled() const { return link_->may_skip_doorbells() && core_.is_open(); }

void channel_state::set_polled(bool on) {
  core_.set_polled(on);
  run();
}

channel_stats channel_state::stats() const {
  auto s = core_.stats();
  s.doorbells_rung = doorbells_rung_;
  s.doorbells_skipped = doorbells_skipped_;
  return s;
}

void channel_state::shutdown() {
  // The io_context is going away: handlers are destroyed without being called, as Asio does.
  // A destroyed send handler may free the buffer of an offer the peer is reading: the guard
  // moves first, so that the peer's read does not count (see proto::fetch_note).
  if (core_.options().offers_are_fetched && core_.outgoing().awaiting_ack()) proto::fetch_guard::withdraw();
  reactor_gone_.store(true, std::memory_order_release);
  sized_.clear();
  views_.clear();
  closes_.clear();
}

// ---- carrying out the core's actions ----

void channel_state::run() {
  if (running_) return;  // the loop below takes what this call was for
  running_ = true;
  for (;;) {
    while (core_.next_batch(batch_)) {
      for (auto& a : batch_) carry_out_any(a);
      if (!core_.has_output()) break;
    }
    if (!gathers_writes_) break;
    // What the writes gathered leaves now. A link that fails doing so fails this channel too,
    // and the actions that makes are carried out by the next round of the loop.
    link_->send_gathered();
    if (!core_.has_output()) break;
  }
  batch_.clear();
  write_error_.clear();
  running_ = false;
}

void channel_state::carry_out_any(proto::action& a) {
  // The common actions by plain tests rather than a visit's jump table, an indirect branch
  // whose target changes with every action of a batch (a guess at the cost, not a measurement:
  // the probes could not separate it from the rest of run()).
  if (auto* place = std::get_if<proto::place>(&a)) return carry_out(*place);
  if (auto* doorbell = std::get_if<proto::ring_doorbell>(&a)) return carry_out(*doorbell);
  if (auto* sent = std::get_if<proto::send_done>(&a)) return carry_out(*sent);
  if (auto* received = std::get_if<proto::receive_done>(&a)) return carry_out(*received);
  std::visit([this](auto& each) { carry_out(each); }, a);
}

void channel_state::run_and_rearm() {
  run();
  after_run();
}

void channel_state::carry_out(const proto::place& a) {
  if (write_error_) return;
  std::error_code ec;
  if (a.source.file.descriptor >= 0) {
    const fabric::file_piece piece{a.source.file.descriptor, a.source.file.offset + a.source_offset, a.source_length};
    ec = link_->write_from_file({a.key, a.address}, a.prefix(), piece);
  } else {
    pieces_.clear();
    pieces_.push_back(a.prefix());
    proto::for_each_piece(a.source, a.source_offset, a.source_length, [&](auto piece) { pieces_.push_back(piece); });
    if (a.has_trailer) {
      ec = link_->write_frame({a.key, a.address}, pieces_, {a.key, a.trailer_address}, a.trailer());
    } else if (a.held_until_done && gathers_writes_) {
      ec = link_->write_held({a.key, a.address}, pieces_, a.held_until_done);
      held_sends_.push_back(a.held_until_done);
    } else {
      ec = link_->write({a.key, a.address}, pieces_);
    }
  }
  if (!ec && a.has_trailer && a.source.file.descriptor >= 0) {
    const std::span<const std::byte> trailer[] = {a.trailer()};
    ec = link_->write({a.key, a.trailer_address}, trailer);
  }
  if (ec) {
    write_error_ = ec;
    core_.write_failed(ec);
  }
}

void channel_state::carry_out(const proto::ring_doorbell& a) {
  if (write_error_) return;
  if (link_->ring_doorbell_unless_polled(setup_.peer_id, {a.peer_polls, a.mask})) {
    ++doorbells_rung_;
  } else {
    ++doorbells_skipped_;
  }
}

void channel_state::carry_out(const proto::provision& a) {
  provision_started_ = now();
  auto region = link_->register_region(a.bytes);
  std::optional<proto::local_ring> ring;
  if (region) {
    ring = proto::local_ring{region->handle, region->key, region->address, region->data, a.request.tier, 0};
  } else {
    reactor_.provision_refused();
  }
  core_.provisioned(a.request, ring, reactor_.under_pressure());
}

void channel_state::carry_out(const proto::lend_buffer& a) {
  std::optional<proto::lent_region> lent;
  if (auto region = link_->lend(a.memory)) lent = proto::lent_region{region->handle, region->key, region->address};
  core_.lent(a.offer_id, lent);
}

void channel_state::carry_out(const proto::fetch_message& a) {
  core_.fetched(a.offer_id, !link_->fetch(a.source, a.guard_address, a.guard_value, a.into));
}

void channel_state::carry_out(const proto::check_handover& a) {
  if (write_error_) return;
  if (gathers_writes_) link_->send_gathered();
  core_.handed_over(a.offer_id, !link_->holds_unsent(), now());
}

void channel_state::carry_out(const proto::release_region& a) { link_->release_region(a.region); }

void channel_state::carry_out(proto::send_done& a) {
  const std::error_code ec = a.ec ? a.ec : write_error_;
  // Its memory is the application's again once the handler runs: the link lets go of it first.
  if (!held_sends_.empty() && a.ranges) {
    const auto held = std::find(held_sends_.begin(), held_sends_.end(), a.ranges->parts().data());
    if (held != held_sends_.end()) {
      link_->release_held(*held);
      held_sends_.erase(held);
    }
  }
  core_.recycle(std::move(a.ranges));
  if (auto done = sized_.take(a.id)) complete(*done, for_asio(ec), ec ? 0 : a.bytes);
}

void channel_state::carry_out(const proto::receive_done& a) {
  if (auto done = sized_.take(a.id)) complete(*done, for_asio(a.ec), a.bytes);
}

void channel_state::carry_out(proto::view_done& a) {
  auto done = views_.take(a.id);
  if (!done) return;
  if (a.zero_copy) {
    // Its last owner may be waiting for the lock to destroy it; then nobody can take the view.
    auto self = weak_from_this().lock();
    if (!self) return complete(*done, make_error_code(error::channel_closed), message_view{});
    complete(*done, a.ec, access::make_view(std::move(self), frame_ref{a.token.ring_epoch, a.token.ordinal}, a.bytes));
  } else if (!a.ec) {
    complete(*done, a.ec, access::make_view(std::move(a.assembled)));
  } else {
    complete(*done, for_asio(a.ec), message_view{});
  }
}

void channel_state::carry_out(const proto::close_done& a) {
  if (auto done = closes_.take(a.id)) complete(*done, for_asio(a.ec));
}

void channel_state::carry_out(const proto::tier_changed& a) {
  using what = tier_event::what;
  // Timed with the clock itself, not the pass's reading: a handshake takes a few microseconds,
  // less than the reactor lets its reading age while it spins.
  if (a.event.kind == what::requested) request_written_ = now();
  if (!on_tier_event_ || reactor_gone_) return;
  auto e = a.event;
  // The answer to a request was written just before this: provisioning is registering the
  // ring and writing the acknowledgement.
  if (e.kind == what::provisioned || e.kind == what::refused) e.elapsed = now() - provision_started_;
  if (e.kind == what::granted || e.kind == what::denied || e.kind == what::timed_out)
    e.elapsed = now() - request_written_;
  asio::post(executor_, [fn = on_tier_event_, e] { fn(e); });
}

void channel_state::carry_out(const proto::reached& a) {
  if (!reactor_gone_) reactor_.reached(a.step);
}

void channel_state::carry_out(const proto::detach&) { link_->send_detach(setup_.peer_id); }

void channel_state::after_run() {
  if (reactor_gone_) return;
  reactor_.watch(this, core_.wants_watching());
  deadline_ = core_.next_deadline();
  if (deadline_) reactor_.deadline_at(*deadline_);
}

}  // namespace bellows::detail
