#pragma once
// The reactor-side object of one channel: both protocol halves, the provider link, and the
// application's pending operations. It turns protocol actions into provider calls (writes,
// doorbells, provisioning) and matches delivered frames with pending receives.

#include "fabric/endpoint.hpp"
#include "fabric/link.hpp"
#include "proto/receiver.hpp"
#include "proto/sender.hpp"

#include <bellows/channel.hpp>
#include <bellows/detail/channel_access.hpp>
#include <bellows/options.hpp>
#include <bellows/stats.hpp>

#include <asio/steady_timer.hpp>

#include <deque>
#include <memory>
#include <optional>
#include <system_error>
#include <type_traits>
#include <vector>

namespace bellows::detail {

class reactor;

class channel_state final : public fabric::channel_endpoint, public std::enable_shared_from_this<channel_state> {
 public:
  static proto::outcome<std::shared_ptr<channel_state>> make(reactor& r, std::shared_ptr<fabric::link> link,
                                                             const fabric::channel_setup& setup,
                                                             const channel_options& local);
  ~channel_state();

  // Application side (see channel.hpp).
  asio::any_io_executor executor() const;
  std::uint64_t next_id() noexcept { return ++last_op_id_; }
  void start_send(std::uint64_t id, gather message, size_completion done);
  void start_receive(std::uint64_t id, scatter into, size_completion done);
  void start_receive_view(std::uint64_t id, view_completion done);
  void start_close(std::uint64_t id, close_completion done);
  void cancel(std::uint64_t id);
  void cancel_all();
  send_status try_send(const gather& message, std::error_code& ec);
  void abort();
  bool is_open() const noexcept { return !failed_ && !aborted_; }
  channel_stats stats() const;
  void release(frame_ref frame);

  // Reactor side.
  /// Asks the peer to shrink our receive ring back (the budget is short), or lifts that.
  void set_pressure(bool on);
  /// Reads the control block and the ring; `now` may be a time the reactor read for a whole pass.
  void poll(proto::clock_time now = std::chrono::steady_clock::now().time_since_epoch());
  bool in_active = false;
  bool watched = false;
  void shutdown();
  void disarm_timer();

  void on_doorbell() override;
  void on_peer_detached() override;
  void on_link_failed(std::error_code ec) override;

 private:
  struct send_op {
    std::uint64_t id;
    gather message;
    size_completion done;
  };
  struct receive_op {
    std::uint64_t id;
    scatter into;
    size_completion done_size;
    view_completion done_view;
    std::uint64_t filled = 0;
    std::vector<std::byte> assembled;
    bool started = false;
    bool wants_view() const noexcept { return static_cast<bool>(done_view); }
  };

  channel_state(reactor& r, std::shared_ptr<fabric::link> link, const fabric::channel_setup& setup,
                proto::direction_options options, std::function<void(const tier_event&)> on_tier_event);

  static proto::clock_time now();
  proto::clock_time now_for_deadlines() const;
  void execute(proto::sender_events& ev);
  void execute(proto::receiver_events& ev);
  void write_frame(const proto::frame_write& w);
  void write_control(std::size_t offset, std::span<const std::byte> bytes);
  /// Tells the test hook (if any) which protocol step writing a frame of this kind completed.
  void reach_after(proto::frame_kind written);
  void provision(const proto::provision_request& request);
  void deliver();
  bool deliver_front();
  void complete_receive(receive_op& op, std::error_code ec);
  void finish_receives();
  void fail(std::error_code ec);
  void detach();
  void after_poll();
  void arm_timer();
  void op_done();
  void report(const tier_event& e);
  /// Completes an operation through the reactor, which dispatches it after its poll; posted once
  /// the reactor is gone.
  template <class... Args>
  void complete(completion<Args...>& done, std::type_identity_t<Args>... args) {
    if (reactor_takes_completions()) {
      defer(done.bind(std::move(args)...));
    } else {
      done.post(std::move(args)...);
    }
  }
  bool reactor_takes_completions() const noexcept;
  void defer(std::unique_ptr<ready_completion> ready);

  reactor& reactor_;
  std::shared_ptr<fabric::link> link_;
  fabric::channel_setup setup_;
  proto::direction_options options_;
  proto::sender tx_;
  proto::receiver rx_;
  proto::sender_events tx_events_;
  proto::receiver_events rx_events_;
  std::vector<std::span<const std::byte>> pieces_;
  std::deque<std::unique_ptr<send_op>> sends_;  // stable addresses: the sender holds spans of them
  std::deque<receive_op> receives_;
  std::deque<proto::inbound_frame> ready_;
  std::optional<close_completion> close_;
  std::uint64_t close_id_ = 0;
  std::optional<std::error_code> close_result_;
  bool discarding_ = false;
  std::error_code failed_;
  bool aborted_ = false;
  bool detached_ = false;
  bool peer_detached_ = false;
  bool reactor_gone_ = false;
  std::uint64_t last_op_id_ = 0;
  std::optional<asio::steady_timer> timer_;
  std::optional<proto::clock_time> timer_deadline_;
  channel_stats counters_;
  std::function<void(const tier_event&)> on_tier_event_;
  proto::clock_time requested_at_{};
};

}  // namespace bellows::detail
