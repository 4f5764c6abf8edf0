#pragma once
// The reactor-side object of one channel: it hands the application's requests and the
// reactor's polls to the channel core (proto/channel_core.hpp) and carries out the actions the
// core returns, through the provider link and the application's completion handlers. It knows
// nothing of the wire and decides nothing about the protocol.

#include "fabric/endpoint.hpp"
#include "fabric/link.hpp"
#include "proto/channel_core.hpp"
#include "reactor/reactor_lock.hpp"

#include <bellows/channel.hpp>
#include <bellows/detail/channel_access.hpp>
#include <bellows/options.hpp>
#include <bellows/stats.hpp>

#include <atomic>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <system_error>
#include <type_traits>
#include <utility>
#include <vector>

namespace bellows::detail {

class reactor;

/// Completion handlers of pending operations, by operation id. A channel has a handful pending
/// at most, and they usually finish in the order they started: a vector searched from the front.
template <class Completion>
class waiting_ops {
 public:
  void add(std::uint64_t id, Completion done) { ops_.emplace_back(id, std::move(done)); }
  std::optional<Completion> take(std::uint64_t id) {
    for (auto it = ops_.begin(); it != ops_.end(); ++it) {
      if (it->first != id) continue;
      Completion done = std::move(it->second);
      ops_.erase(it);
      return done;
    }
    return std::nullopt;
  }
  void clear() { ops_.clear(); }

 private:
  std::vector<std::pair<std::uint64_t, Completion>> ops_;
};

class channel_state final : public fabric::channel_endpoint, public std::enable_shared_from_this<channel_state> {
 public:
  /// A channel whose handlers run on `executor` (the io_context's, or a strand of it) unless
  /// they name their own. It is destroyed under the reactor's lock, on whatever thread lets go
  /// of it last.
  static proto::outcome<std::shared_ptr<channel_state>> make(reactor& r, asio::any_io_executor executor,
                                                             std::shared_ptr<fabric::link> link,
                                                             const fabric::channel_setup& setup,
                                                             const channel_options& local);
  ~channel_state();

  /// The reactor's lock, which every call from the application holds (none once the
  /// io_context is gone: nothing else runs then).
  std::unique_lock<reactor_lock> hold() const;

  // Application side (see channel.hpp); the caller holds the lock.
  const asio::any_io_executor& executor() const noexcept { return executor_; }
  const asio::io_context* context_kept_busy() const noexcept;
  /// For an acceptor handing out a channel nobody has used yet: the accept names its executor.
  void move_to(asio::any_io_executor executor) { executor_ = std::move(executor); }
  /// Called by the one thread that uses the channel at a time (the threading rule), unlocked.
  std::uint64_t next_id() noexcept { return ++last_op_id_; }
  void start_send(std::uint64_t id, gather&& message, size_completion done);
  void start_receive(std::uint64_t id, scatter&& into, size_completion done);
  void start_receive_view(std::uint64_t id, view_completion done);
  void start_close(std::uint64_t id, close_completion done);
  void cancel(std::uint64_t id);
  void cancel_all();
  send_status try_send(const gather& message, std::error_code& ec);
  void abort();
  bool is_open() const noexcept { return core_.is_open(); }
  channel_stats stats() const;
  void release(frame_ref frame);

  // Reactor side.
  void set_pressure(bool on);
  /// Reads the control block and the ring; `now` may be a time the reactor read for a whole pass.
  /// True if that found anything to act on.
  bool poll(proto::clock_time now = std::chrono::steady_clock::now().time_since_epoch());
  /// Whether the peer would skip its doorbells for this channel while the reactor polls it on
  /// every round (the provider allows it and the channel is open).
  bool may_be_polled() const;
  /// Tells the peer that the reactor polls the channel on every round, or no longer does.
  void set_polled(bool on);
  bool in_active = false;
  bool watched = false;
  bool polled = false;
  void shutdown();
  bellows::endpoint remote_endpoint() const { return link_->peer_endpoint(); }
  /// When the core next has something due without any input; announced to the reactor.
  std::optional<proto::clock_time> deadline() const noexcept { return deadline_; }

  void on_doorbell() override;
  void on_peer_detached() override;
  void on_link_failed(std::error_code ec) override;

 private:
  channel_state(reactor& r, asio::any_io_executor executor, std::shared_ptr<fabric::link> link,
                const fabric::channel_setup& setup, proto::direction_options options,
                std::function<void(const tier_event&)> on_tier_event);

  static proto::clock_time now();
  proto::clock_time now_for_deadlines() const;
  /// Carries out the core's actions, including those that carrying them out produces.
  void run();
  /// run(), then tells the reactor whether to watch the channel and when its timer is due: for
  /// inputs that may change what the sender waits for (a receive or a release cannot).
  void run_and_rearm();
  void carry_out_any(proto::action& a);
  void carry_out(const proto::place& a);
  void carry_out(const proto::ring_doorbell& a);
  void carry_out(const proto::provision& a);
  void carry_out(const proto::lend_buffer& a);
  void carry_out(const proto::fetch_message& a);
  void carry_out(const proto::check_handover& a);
  void carry_out(const proto::release_region& a);
  void carry_out(proto::send_done& a);
  void carry_out(const proto::receive_done& a);
  void carry_out(proto::view_done& a);
  void carry_out(const proto::close_done& a);
  void carry_out(const proto::tier_changed& a);
  void carry_out(const proto::reached& a);
  void carry_out(const proto::detach& a);
  void after_run();
  void op_done();
  /// Completes an operation through the reactor, which dispatches it after its poll; posted once
  /// the reactor is gone.
  template <class... Args>
  void complete(completion<Args...>& done, std::type_identity_t<Args>... args);

  reactor& reactor_;
  asio::any_io_executor executor_;
  std::shared_ptr<fabric::link> link_;
  fabric::channel_setup setup_;
  proto::channel_core core_;
  std::vector<proto::action> batch_;
  std::vector<std::span<const std::byte>> pieces_;
  /// A place or doorbell failed in this run: later ones are skipped, and a send reported done
  /// after it reports the failure, since its bytes may be what did not arrive.
  std::error_code write_error_;
  proto::clock_time provision_started_{};
  proto::clock_time request_written_{};
  bool running_ = false;
  bool gathers_writes_ = false;  ///< the link's send_gathered() does something
  /// Sends whose bytes the link may still be sending from their own memory (write_held): each
  /// is released before its send completes, or when this channel goes.
  std::vector<const void*> held_sends_;
  waiting_ops<size_completion> sized_;  // sends and copying receives
  waiting_ops<view_completion> views_;
  waiting_ops<close_completion> closes_;
  // Set while the io_context shuts down; read without the lock by hold(), hence atomic.
  std::atomic<bool> reactor_gone_ = false;
  std::uint64_t last_op_id_ = 0;
  std::uint64_t doorbells_rung_ = 0;
  std::uint64_t doorbells_skipped_ = 0;
  std::optional<proto::clock_time> deadline_;
  std::function<void(const tier_event&)> on_tier_event_;
};

}  // namespace bellows::detail
