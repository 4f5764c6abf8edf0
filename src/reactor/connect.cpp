#include "fabric/verbs/address.hpp"
#include "reactor/channel_state.hpp"
#include "reactor/reactor.hpp"

#include <bellows/connect.hpp>
#include <bellows/error.hpp>

#include <asio/error.hpp>

#include <string_view>

namespace bellows::detail {
namespace {

constexpr std::string_view shm_scheme = "shm://";
constexpr std::string_view rdma_scheme = "rdma://";

/// An async_connect in flight; `done` is empty once it completed or was cancelled.
struct pending_connect {
  channel_completion done;
  channel_options options;
  std::shared_ptr<shm::link> shm_link;
  std::uint32_t shm_id = 0;
  std::shared_ptr<verbs::network::pending_open> rdma_open;
};

void finish(reactor& r, pending_connect& p, std::error_code ec, channel ch = {}) {
  if (!p.done) return;
  p.done.post(ec, std::move(ch));
  r.op_finished();
}

/// The peer accepted: the channel's state joins the reactor, or the link is undone.
void opened(reactor& r, pending_connect& p, const std::shared_ptr<fabric::link>& link, fabric::channel_setup setup) {
  // The opener's tier table governs the channel; the peer accepted it as sent.
  setup.tiers = p.options.tiers;
  setup.max_message_size = p.options.max_message_size;
  auto state = channel_state::make(r, link, setup, p.options);
  if (!state) {
    link->send_detach(setup.peer_id);
    link->retire(setup.local_id, {setup.control.handle, setup.ring.handle});
    return finish(r, p, state.failure());
  }
  finish(r, p, {}, channel(std::move(*state)));
}

void connect_shm(reactor& r, const std::shared_ptr<pending_connect>& p, const std::string& name) {
  auto link = r.client_link(name);
  if (!link) return finish(r, *p, link.failure());
  p->shm_link = *link;
  p->shm_id = (*link)->open_channel(p->options.tiers, p->options.max_message_size,
                                    [&r, p](proto::outcome<fabric::channel_setup> setup) {
                                      if (!p->done) return;  // cancelled
                                      if (!setup) return finish(r, *p, setup.failure());
                                      opened(r, *p, p->shm_link, std::move(*setup));
                                    });
}

void connect_rdma(reactor& r, const std::shared_ptr<pending_connect>& p, std::string_view host_port) {
  auto to = verbs::resolve(host_port, false);
  if (!to) return finish(r, *p, to.failure());
  p->rdma_open = r.rdma().open(*to, p->options.tiers, p->options.max_message_size,
                               [&r, p](proto::outcome<verbs::opened_channel> result) {
                                 if (!p->done) return;
                                 if (!result) return finish(r, *p, result.failure());
                                 opened(r, *p, result->link, std::move(result->setup));
                               });
}

}  // namespace

void start_connect(const asio::any_io_executor& ex, std::string uri, channel_options options, channel_completion done,
                   asio::cancellation_slot slot) {
  reactor& r = reactor::of(ex);
  r.op_started();
  auto p = std::make_shared<pending_connect>();
  p->done = std::move(done);
  p->options = std::move(options);
  const std::string_view target(uri);
  const bool shm = target.starts_with(shm_scheme) && target.size() > shm_scheme.size();
  const bool rdma = target.starts_with(rdma_scheme) && target.size() > rdma_scheme.size();
  if ((!shm && !rdma) || target.find('\0') != std::string_view::npos || !proto::tier_table::make(p->options.tiers) ||
      p->options.tiers.size() > proto::max_tiers)
    return finish(r, *p, make_error_code(error::invalid_argument));

  if (shm) {
    connect_shm(r, p, uri.substr(shm_scheme.size()));
  } else {
    connect_rdma(r, p, target.substr(rdma_scheme.size()));
  }
  if (!p->done || !slot.is_connected()) return;
  slot.assign([&r, weak = std::weak_ptr<pending_connect>(p)](asio::cancellation_type) {
    auto pending = weak.lock();
    if (!pending || !pending->done) return;
    if (pending->shm_link && pending->shm_id != 0) pending->shm_link->cancel_open(pending->shm_id);
    if (pending->rdma_open) r.rdma().cancel(pending->rdma_open);
    finish(r, *pending, asio::error::operation_aborted);
  });
}

}  // namespace bellows::detail
