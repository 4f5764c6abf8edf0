#include "reactor/acceptor_state.hpp"

#include "fabric/registry.hpp"
#include "reactor/channel_state.hpp"
#include "reactor/reactor.hpp"

#include <bellows/acceptor.hpp>
#include <bellows/error.hpp>

#include <asio/error.hpp>

namespace bellows::detail {

acceptor_state::acceptor_state(reactor& r, channel_options options) : reactor_(r), options_(std::move(options)) {
  reactor_.add_acceptor(this);
}

std::error_code acceptor_state::listen(fabric::connector& via, std::string_view address) {
  auto l = via.listen(address, [weak = weak_from_this()](const fabric::opened_channel& c) {
    auto self = weak.lock();
    return self && self->on_channel_opened(c);
  });
  if (!l) return l.failure();
  listener_ = std::move(*l);
  return {};
}

acceptor_state::~acceptor_state() {
  if (!reactor_gone_) reactor_.remove_acceptor(this);
}

asio::any_io_executor acceptor_state::executor() const { return reactor_.executor(); }

void acceptor_state::start_accept(std::uint64_t id, channel_completion done) {
  reactor_.op_started();
  if (closed_) {
    done.post(asio::error::operation_aborted, channel{});
    return reactor_.op_finished();
  }
  // A peer that gave up before we accepted (over rdma the connection manager accepts for us)
  // left a channel that is already reset: it is dropped, not handed out.
  while (!backlog_.empty() && !backlog_.front().is_open()) backlog_.pop_front();
  if (!backlog_.empty()) {
    done.post({}, std::move(backlog_.front()));
    backlog_.pop_front();
    return reactor_.op_finished();
  }
  waiting_.emplace_back(id, std::move(done));
  if (listener_) listener_->want_peers(true);
}

void acceptor_state::cancel(std::uint64_t id) {
  for (auto it = waiting_.begin(); it != waiting_.end(); ++it) {
    if (it->first != id) continue;
    it->second.post(asio::error::operation_aborted, channel{});
    waiting_.erase(it);
    if (waiting_.empty() && listener_) listener_->want_peers(false);
    return reactor_.op_finished();
  }
}

void acceptor_state::close() {
  if (closed_) return;
  closed_ = true;
  listener_.reset();
  backlog_.clear();  // their peers see connection_reset
  while (!waiting_.empty()) {
    waiting_.front().second.post(asio::error::operation_aborted, channel{});
    waiting_.pop_front();
    reactor_.op_finished();
  }
}

void acceptor_state::shutdown() {
  reactor_gone_ = true;
  waiting_.clear();
  backlog_.clear();
  listener_.reset();
}

bool acceptor_state::on_channel_opened(const fabric::opened_channel& c) {
  if (closed_) return false;
  auto state = channel_state::make(reactor_, c.carrier, c.setup, options_);
  if (!state) return false;
  channel accepted = access::make_channel(std::move(*state));
  if (!waiting_.empty()) {
    waiting_.front().second.post({}, std::move(accepted));
    waiting_.pop_front();
    // As with an Asio acceptor, an open one with no accept pending holds no work: later peers
    // wait in the listening socket's backlog (their links, in the link's socket).
    if (waiting_.empty() && listener_) listener_->want_peers(false);
    reactor_.op_finished();
  } else {
    backlog_.push_back(std::move(accepted));
  }
  return true;
}

// ---- entry points ----

std::shared_ptr<acceptor_state> listen(const asio::any_io_executor& ex, std::string_view uri,
                                       const channel_options& options, std::error_code& ec) {
  ec = {};
  reactor& r = reactor::of(ex);
  const auto parts = fabric::split_uri(uri);
  fabric::connector* via = parts ? r.connector_for(parts->scheme) : nullptr;
  if (via == nullptr || !proto::tier_table::make(options.tiers)) {
    ec = make_error_code(error::invalid_argument);
    return nullptr;
  }
  auto state = std::make_shared<acceptor_state>(r, options);
  ec = state->listen(*via, parts->address);
  return ec ? nullptr : state;
}

asio::any_io_executor executor_of(const acceptor_state& s) noexcept { return s.executor(); }
std::uint64_t next_operation_id(acceptor_state& s) noexcept { return s.next_id(); }
void start_accept(acceptor_state& s, std::uint64_t id, channel_completion done) { s.start_accept(id, std::move(done)); }
void cancel(acceptor_state& s, std::uint64_t id) noexcept { s.cancel(id); }
void close(acceptor_state& s) noexcept { s.close(); }

}  // namespace bellows::detail
