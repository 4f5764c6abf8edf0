#pragma once
// A link that carries any number of channels between two reactors over one connection (shm: a
// control socket and two arenas; tcp: one stream). It keeps the channels' slots, each with its
// control block and first ring, and runs their opening, accepting, refusing, withdrawing and
// detaching through control messages (fabric/control_message.hpp). A provider supplies the
// connection (transmit, fail) and the memory (the provider calls).

#include "fabric/connector.hpp"
#include "fabric/control_message.hpp"
#include "fabric/endpoint.hpp"
#include "fabric/link.hpp"
#include "fabric/poller.hpp"
#include "proto/outcome.hpp"

#include <bellows/endpoint.hpp>
#include <bellows/error.hpp>

#include <deque>
#include <functional>
#include <memory>
#include <optional>
#include <utility>
#include <vector>

namespace bellows::fabric {

class multiplexed_link : public link, public poller, public std::enable_shared_from_this<multiplexed_link> {
 public:
  using open_handler = std::function<void(proto::outcome<channel_setup>)>;
  /// Server side: a peer opens a channel. Return true after attaching an endpoint to
  /// `setup.local_id`, or false to refuse it.
  using accept_hook = std::function<bool(multiplexed_link&, const channel_setup& setup)>;
  using failure_hook = std::function<void(multiplexed_link&, std::error_code)>;

  void set_hooks(accept_hook on_accept, failure_hook on_failure);
  /// Server side: channels the peer opens go to `on_accept`. The link outlives the listener
  /// (its channels stay open after the acceptor closes); the hook decides, by what it
  /// captured, whether anyone still accepts.
  void serve_accepts(fabric::accept_hook on_accept);
  /// Opens a channel over `l` for a connector: `done` gets the channel with `l` as its carrier.
  /// Null when `done` was already called.
  static std::shared_ptr<pending_open> open_over(const std::shared_ptr<multiplexed_link>& l,
                                                 const std::vector<tier>& tiers, std::uint64_t max_message_size,
                                                 fabric::open_handler done);
  /// The same over a connector's link, or `done` with why it has none.
  template <class Link>
  static std::shared_ptr<pending_open> open_over(const proto::outcome<std::shared_ptr<Link>>& l,
                                                 const std::vector<tier>& tiers, std::uint64_t max_message_size,
                                                 fabric::open_handler done) {
    if (!l) {
      done(l.failure());
      return nullptr;
    }
    return open_over(std::shared_ptr<multiplexed_link>(*l), tiers, max_message_size, std::move(done));
  }

  /// Opens a channel whose first rings use `tiers[0]`; `done` gets the agreed set-up.
  /// Returns the local id to cancel it with, or 0 when `done` was already told why not.
  std::uint32_t open_channel(const std::vector<tier>& tiers, std::uint64_t max_message_size, open_handler done);
  /// Abandons an open still waiting for the peer; its answer will be undone when it comes.
  void cancel_open(std::uint32_t local_id);
  void attach(std::uint32_t local_id, channel_endpoint* endpoint) override;
  void send_detach(std::uint32_t peer_id) override;
  void retire(std::uint32_t local_id, std::vector<std::uint64_t> regions) override;
  bellows::endpoint peer_endpoint() const override { return peer_endpoint_; }

  bool ready() const noexcept { return state_ == state::ready; }
  bool failed() const noexcept { return state_ == state::failed; }
  void dropped() noexcept override { dropped_ = true; }
  /// Still polled by the reactor: a link that is not may not carry new channels.
  bool served() const noexcept { return !dropped_; }
  /// No channel is open or opening (retired ones may still await the peer's detach): the link
  /// can be dropped.
  bool unused() const noexcept;

 protected:
  enum class state { handshaking, ready, failed };

  multiplexed_link() = default;

  /// Puts one control message on the connection, after those before it.
  virtual void transmit(const link_message& m) = 0;
  /// Closes the connection and fails every channel; a provider closes its own part, then
  /// calls fail_channels().
  virtual void fail(std::error_code ec) = 0;
  void fail_channels(std::error_code ec);

  /// Sends `m`, or holds it until the handshake is done.
  void send(const link_message& m);
  /// The peer's hello was taken: what waited for it goes out.
  void become_ready();
  /// Handles control messages read together. An open and its withdrawal in one batch (nobody
  /// accepted meanwhile) cancel out: the acceptor never sees a channel its opener gave up on.
  void handle_batch(std::vector<link_message>& batch);
  /// The peer's hello: checks it and makes the link ready, or fails it.
  virtual void on_hello(const link_message& m) = 0;
  /// The peer's proof of the pre-shared key; a provider that never demands one is lied to.
  virtual void on_proof(const link_message&) { fail(make_error_code(error::protocol_violation)); }

  /// Calls `f(endpoint)` for every channel served here, as a doorbell for each does.
  template <class F>
  void for_each_endpoint(F&& f) {
    for (auto& s : slots_)
      if (s.in_use && s.endpoint != nullptr) f(*s.endpoint);
  }
  /// The endpoint of channel `id`, if it has one.
  channel_endpoint* endpoint_of(std::uint32_t id);

  state state_ = state::handshaking;
  bellows::endpoint peer_endpoint_;
  /// The peer's memory, as our writes name it: its key and the window every address is in.
  std::uint64_t peer_key_ = 0;
  std::uint64_t peer_window_begin_ = 0;
  std::uint64_t peer_window_end_ = 0;
  /// Told to channels opened after the failure (a descriptor limit reads better than a reset).
  std::error_code why_failed_ = make_error_code(error::connection_reset);

 private:
  struct channel_slot {
    channel_endpoint* endpoint = nullptr;
    std::optional<open_handler> opening;
    region control;
    region ring;
    bool in_use = false;
    bool peer_detached = false;
    bool retired = false;
    std::vector<std::uint64_t> graveyard;
  };

  void handle(const link_message& m);
  void on_open(const link_message& m);
  void on_accepted(const link_message& m);
  void on_refused(const link_message& m);
  void on_detach(const link_message& m);
  /// Answers an open whose opener withdrew it before we read it: refused, no channel made.
  void refuse_withdrawn(const link_message& open);
  std::uint32_t allocate_id();
  /// A slot with the channel's control block and first ring already registered.
  proto::outcome<std::uint32_t> new_channel_slot(const tier& first);
  void free_slot(std::uint32_t id);
  channel_setup setup_for(std::uint32_t id, std::uint32_t peer_id, const link_message& m) const;
  channel_slot* slot(std::uint32_t id);

  bool dropped_ = false;
  std::deque<link_message> waiting_for_handshake_;
  std::vector<channel_slot> slots_;  // index = id - 1
  std::vector<std::uint32_t> free_ids_;
  accept_hook on_accept_;
  failure_hook on_failure_;
};

}  // namespace bellows::fabric
