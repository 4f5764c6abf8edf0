#include "reactor/acceptor_state.hpp"

#include "fabric/registry.hpp"
#include "reactor/channel_state.hpp"
#include "reactor/reactor.hpp"

#include <bellows/acceptor.hpp>
#include <bellows/error.hpp>

#include <asio/error.hpp>

namespace bellows::detail {

const asio::io_context* acceptor_state::context_kept_busy() const noexcept {
  return reactor_gone_.load(std::memory_order_acquire) ? nullptr : &reactor_.io();
}

acceptor_state::acceptor_state(reactor& r, asio::any_io_executor executor, channel_options options)
    : reactor_(r), executor_(std::move(executor)), options_(std::move(options)) {
  reactor_.add_acceptor(this);
}

std::unique_lock<reactor_lock> acceptor_state::hold() const {
  if (reactor_gone_.load(std::memory_order_acquire)) return {};
  return reactor_.hold();
}

std::error_code acceptor_state::listen(fabric::connector& via, std::string_view address) {
  auto l = via.listen(address, options_.pre_shared_key, [weak = weak_from_this()](const fabric::opened_channel& c) {
    auto self = weak.lock();
    return self && self->on_channel_opened(c);
  });
  if (!l) return l.failure();
  listener_ = std::move(*l);
  return {};
}

acceptor_state::~acceptor_state() {
  for (auto& unclaimed : backlog_) unclaimed->abort();  // their peers see connection_reset
  if (!reactor_gone_) reactor_.remove_acceptor(this);
}

void acceptor_state::hand_out(std::shared_ptr<channel_state> accepted, waiting_accept& to, std::error_code ec) {
  if (accepted) accepted->move_to(to.channel_executor);
  to.done.post(ec, accepted ? access::make_channel(std::move(accepted)) : channel{});
}

void acceptor_state::start_accept(std::uint64_t id, asio::any_io_executor channel_executor, channel_completion done) {
  reactor_.op_started();
  waiting_accept accept{id, std::move(channel_executor), std::move(done)};
  if (closed_) {
    hand_out(nullptr, accept, asio::error::operation_aborted);
    return reactor_.op_finished();
  }
  // A peer that gave up before we accepted (over rdma the connection manager accepts for us)
  // left a channel that is already reset: it is dropped, not handed out.
  while (!backlog_.empty() && !backlog_.front()->is_open()) backlog_.pop_front();
  if (!backlog_.empty()) {
    hand_out(std::move(backlog_.front()), accept);
    backlog_.pop_front();
    return reactor_.op_finished();
  }
  waiting_.push_back(std::move(accept));
  if (listener_) listener_->want_peers(true);
}

void acceptor_state::cancel(std::uint64_t id) {
  for (auto it = waiting_.begin(); it != waiting_.end(); ++it) {
    if (it->id != id) continue;
    hand_out(nullptr, *it, asio::error::operation_aborted);
    waiting_.erase(it);
    if (waiting_.empty() && listener_) listener_->want_peers(false);
    return reactor_.op_finished();
  }
}

void acceptor_state::close() {
  if (closed_) return;
  closed_ = true;
  listener_.reset();
  for (auto& unclaimed : backlog_) unclaimed->abort();  // their peers see connection_reset
  backlog_.clear();
  while (!waiting_.empty()) {
    hand_out(nullptr, waiting_.front(), asio::error::operation_aborted);
    waiting_.pop_front();
    reactor_.op_finished();
  }
}

void acceptor_state::shutdown() {
  reactor_gone_.store(true, std::memory_order_release);
  waiting_.clear();
  backlog_.clear();
  listener_.reset();
}

bool acceptor_state::on_channel_opened(const fabric::opened_channel& c) {
  if (closed_) return false;
  auto state = channel_state::make(reactor_, executor_, c.carrier, c.setup, options_);
  if (!state) return false;
  if (!waiting_.empty()) {
    hand_out(std::move(*state), waiting_.front());
    waiting_.pop_front();
    // As with an Asio acceptor, an open one with no accept pending holds no work: later peers
    // wait in the listening socket's backlog (their links, in the link's socket).
    if (waiting_.empty() && listener_) listener_->want_peers(false);
    reactor_.op_finished();
  } else {
    backlog_.push_back(std::move(*state));
  }
  return true;
}

// ---- entry points ----

std::shared_ptr<acceptor_state> listen(const asio::any_io_executor& ex, std::string_view uri,
                                       const channel_options& options, std::error_code& ec) {
  ec = {};
  reactor& r = reactor::of(ex);
  auto held = r.hold();
  const auto parts = fabric::split_uri(uri);
  fabric::connector* via = parts ? r.connector_for(parts->scheme) : nullptr;
  if (via == nullptr || !proto::tier_table::make(options.tiers)) {
    ec = make_error_code(error::invalid_argument);
    return nullptr;
  }
  std::shared_ptr<acceptor_state> state(new acceptor_state(r, ex, options), [](acceptor_state* s) {
    auto destroying = s->hold();
    delete s;
  });
  ec = state->listen(*via, parts->address);
  return ec ? nullptr : state;
}

asio::any_io_executor executor_of(const acceptor_state& s) noexcept { return s.executor(); }
const asio::io_context* context_kept_busy(const acceptor_state& s) noexcept { return s.context_kept_busy(); }
std::uint64_t next_operation_id(acceptor_state& s) noexcept { return s.next_id(); }
std::weak_ptr<acceptor_state> weak_of(acceptor_state& s) noexcept { return s.weak_from_this(); }
void start_accept(acceptor_state& s, std::uint64_t id, asio::any_io_executor channel_executor,
                  channel_completion done) {
  auto held = s.hold();
  s.start_accept(id, std::move(channel_executor), std::move(done));
}
void cancel(acceptor_state& s, std::uint64_t id) noexcept {
  auto held = s.hold();
  s.cancel(id);
}
void close(acceptor_state& s) noexcept {
  auto held = s.hold();
  s.close();
}

}  // namespace bellows::detail
