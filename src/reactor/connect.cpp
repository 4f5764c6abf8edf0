#include "fabric/registry.hpp"
#include "reactor/channel_state.hpp"
#include "reactor/reactor.hpp"

#include <bellows/connect.hpp>
#include <bellows/error.hpp>

#include <asio/error.hpp>
#include <asio/steady_timer.hpp>

#include <optional>

#include <string_view>

namespace bellows::detail {
namespace {

/// An async_connect in flight; `done` is empty once it completed or was cancelled.
struct pending_connect {
  asio::any_io_executor channel_executor;
  channel_completion done;
  channel_options options;
  std::shared_ptr<fabric::pending_open> open;
  std::optional<asio::steady_timer> deadline;
};

void finish(reactor& r, pending_connect& p, std::error_code ec, channel ch = {}) {
  if (!p.done) return;
  p.done.post(ec, std::move(ch));
  r.op_finished();
  if (p.deadline) p.deadline->cancel();
}

/// Gives up when the peer has not accepted in time, as a cancellation would.
void withdraw(reactor& r, const std::shared_ptr<pending_connect>& p, std::error_code why) {
  if (!p->done) return;
  if (p->open) p->open->cancel();
  finish(r, *p, why);
}

/// The peer accepted: the channel's state joins the reactor, or the link is undone.
void opened(reactor& r, pending_connect& p, fabric::opened_channel c) {
  // The opener's tier table governs the channel; the peer accepted it as sent.
  c.setup.tiers = p.options.tiers;
  c.setup.max_message_size = p.options.max_message_size;
  auto state = channel_state::make(r, p.channel_executor, c.carrier, c.setup, p.options);
  if (!state) {
    c.carrier->send_detach(c.setup.peer_id);
    c.carrier->retire(c.setup.local_id, {c.setup.control.handle, c.setup.ring.handle});
    return finish(r, p, state.failure());
  }
  finish(r, p, {}, access::make_channel(std::move(*state)));
}

}  // namespace

void start_connect(const asio::any_io_executor& ex, std::string uri, channel_options options, channel_completion done,
                   asio::cancellation_slot slot) {
  reactor& r = reactor::of(ex);
  auto held = r.hold();
  r.op_started();
  auto p = std::make_shared<pending_connect>();
  p->channel_executor = ex;
  p->done = std::move(done);
  p->options = std::move(options);
  const auto parts = fabric::split_uri(uri);
  fabric::connector* via = parts ? r.connector_for(parts->scheme) : nullptr;
  if (via == nullptr || parts->address.empty() || !proto::tier_table::make(p->options.tiers) ||
      p->options.tiers.size() > proto::max_tiers)
    return finish(r, *p, make_error_code(error::invalid_argument));

  p->open = via->open(parts->address, p->options.tiers, p->options.max_message_size, p->options.pre_shared_key,
                      [&r, p](proto::outcome<fabric::opened_channel> result) {
                        if (!p->done) return;  // cancelled
                        if (!result) return finish(r, *p, result.failure());
                        opened(r, *p, std::move(*result));
                      });
  if (!p->done) return;
  if (p->options.connect_timeout > std::chrono::nanoseconds::zero()) {
    p->deadline.emplace(r.serial(), p->options.connect_timeout);
    p->deadline->async_wait([&r, weak = std::weak_ptr<pending_connect>(p)](std::error_code ec) {
      if (auto pending = weak.lock(); pending && !ec) withdraw(r, pending, asio::error::timed_out);
    });
  }
  if (!slot.is_connected()) return;
  slot.assign([&r, weak = std::weak_ptr<pending_connect>(p)](asio::cancellation_type) {
    auto cancelling = r.hold();
    if (auto pending = weak.lock()) withdraw(r, pending, asio::error::operation_aborted);
  });
}

}  // namespace bellows::detail
