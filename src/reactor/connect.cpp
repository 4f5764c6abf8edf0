#include "reactor/channel_state.hpp"
#include "reactor/reactor.hpp"

#include <bellows/connect.hpp>
#include <bellows/error.hpp>

#include <asio/error.hpp>

namespace bellows::detail {
namespace {

struct pending_connect {
  channel_completion done;
  std::shared_ptr<shm::link> link;
  std::uint32_t local_id = 0;
};

}  // namespace

void start_connect(const asio::any_io_executor& ex, std::string uri, channel_options options, channel_completion done,
                   asio::cancellation_slot slot) {
  reactor& r = reactor::of(ex);
  r.op_started();
  auto fail_now = [&](std::error_code ec) {
    done.post(ec, channel{});
    r.op_finished();
  };
  constexpr std::string_view scheme = "shm://";
  if (uri.compare(0, scheme.size(), scheme) != 0 || uri.size() == scheme.size() ||
      uri.find('\0') != std::string::npos || !proto::tier_table::make(options.tiers) ||
      options.tiers.size() > proto::max_tiers)
    return fail_now(make_error_code(error::invalid_argument));
  auto link = r.client_link(uri.substr(scheme.size()));
  if (!link) return fail_now(link.failure());

  auto pending = std::make_shared<pending_connect>(pending_connect{std::move(done), *link, 0});
  const auto tiers = options.tiers;
  const auto max_message = options.max_message_size;
  const std::uint32_t id = (*link)->open_channel(
      tiers, max_message, [&r, pending, options = std::move(options)](proto::outcome<fabric::channel_setup> setup) {
        if (!pending->done) return;  // cancelled
        if (!setup) {
          pending->done.post(setup.failure(), channel{});
          return r.op_finished();
        }
        // The opener's tier table governs the channel; the peer accepted it as sent.
        setup->tiers = options.tiers;
        setup->max_message_size = options.max_message_size;
        auto state = channel_state::make(r, pending->link, *setup, options);
        if (!state) {
          pending->link->send_detach(setup->peer_id);
          pending->link->retire(setup->local_id, {setup->control.handle, setup->ring.handle});
          pending->done.post(state.failure(), channel{});
          return r.op_finished();
        }
        pending->done.post({}, channel(std::move(*state)));
        r.op_finished();
      });
  pending->local_id = id;
  if (id != 0 && slot.is_connected()) {
    slot.assign([&r, weak = std::weak_ptr<pending_connect>(pending)](asio::cancellation_type) {
      auto p = weak.lock();
      if (!p || !p->done) return;
      p->link->cancel_open(p->local_id);
      p->done.post(asio::error::operation_aborted, channel{});
      r.op_finished();
    });
  }
}

}  // namespace bellows::detail
