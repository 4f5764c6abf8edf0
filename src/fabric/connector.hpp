#pragma once
// Connection setup, one seam for every provider: a connector opens channels to a URI's address
// and listens on one. The reactor finds the connector of a URI's scheme through the registry
// (fabric/registry.hpp) and never names a provider.

#include "fabric/endpoint.hpp"
#include "fabric/link.hpp"
#include "fabric/memory_budget.hpp"
#include "fabric/poller.hpp"
#include "proto/outcome.hpp"

#include <bellows/options.hpp>
#include <bellows/tier.hpp>

#include <asio/any_io_executor.hpp>

#include <functional>
#include <memory>
#include <string_view>
#include <vector>

namespace bellows::fabric {

/// What the reactor lends a provider: the executor its sockets and descriptors are made with
/// (their handlers then run one at a time under the reactor's lock, however many threads run
/// the io_context), budget and eventfd, its options, and a way to have a poller polled on every
/// pass from now on.
struct host {
  asio::any_io_executor executor;
  memory_budget& budget;
  int wake_fd = -1;
  const context_options& options;
  std::function<void(std::shared_ptr<poller>)> serve;
};

/// A channel both sides agreed on: the link that carries it and this side's set-up.
struct opened_channel {
  std::shared_ptr<link> carrier;
  channel_setup setup;
};

using open_handler = std::function<void(proto::outcome<opened_channel>)>;
/// A peer opened a channel: return true after attaching an endpoint to it, false to refuse it.
using accept_hook = std::function<bool(const opened_channel&)>;

/// An open in flight.
class pending_open {
 public:
  virtual ~pending_open() = default;
  /// The handler will not be called; a channel the peer accepts afterwards is undone.
  virtual void cancel() = 0;
};

/// Takes peers' channels until destroyed.
class listener {
 public:
  virtual ~listener() = default;
  /// Someone waits to accept (or nobody does): a listener that waits for connections holds
  /// outstanding work, which must not keep an idle io_context running.
  virtual void want_peers(bool on) = 0;
};

class connector {
 public:
  virtual ~connector() = default;
  /// Opens a channel to `address` (the URI after "scheme://"); `done` is called once unless the
  /// returned open is cancelled first. Null when `done` was already called. A provider that
  /// authenticates peers proves `pre_shared_key` (empty: none) before the channel is set up.
  virtual std::shared_ptr<pending_open> open(std::string_view address, const std::vector<tier>& tiers,
                                             std::uint64_t max_message_size, std::string_view pre_shared_key,
                                             open_handler done) = 0;
  /// Takes channels at `address`, from peers that prove `pre_shared_key` where it is not empty.
  virtual proto::outcome<std::shared_ptr<listener>> listen(std::string_view address, std::string_view pre_shared_key,
                                                           accept_hook on_accept) = 0;
};

}  // namespace bellows::fabric
