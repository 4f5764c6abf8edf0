#pragma once
// The completion reactor: one per io_context, an Asio service. It polls what can change
// without a syscall (doorbell rings, the control blocks of channels waiting for an ack or for
// credit, the rings of channels that were rung) and resumes the operations waiting on them.
// It spins while there is activity, then sleeps on an eventfd that peers write only when they
// see it asleep, so an idle process burns no CPU. With no operation pending anywhere it holds
// no outstanding work, so io_context::run() can return, exactly as with Asio sockets; its peers
// are still answered then, through a pass the idle watch posts (reactor/idle_watch.hpp). Providers
// reach it through two seams only: the pollers it polls and the connectors it finds by URI
// scheme (fabric/poller.hpp, fabric/connector.hpp); it names none of them.
//
// A channel that a doorbell found busy is polled on every round from then on (a few at most),
// and its peer is told so through the channel's flags word: a provider that can order that
// check after its writes (shm) then skips the doorbell, the cache line it costs both cores and
// the owner's look at the doorbell ring. Before it sleeps or goes idle the reactor clears those
// flags, fences, and polls the channels once more, so a doorbell skipped just before is not lost.
//
// Threads: the io_context may run on any number of threads. The reactor, its channels and
// acceptors, and the providers' links are guarded by one lock (hold(), reactor_lock.hpp); the
// application's calls take it, and the reactor's own handlers and the providers' run on
// serial(), a strand that holds it (reactor/serial_executor.hpp), so passes never overlap. A pass
// lets go of the lock while it hands completions over.

#include "fabric/connector.hpp"
#include "fabric/memory_budget.hpp"
#include "fabric/poller.hpp"
#include "proto/direction.hpp"
#include "proto/step.hpp"
#include "reactor/idle_watch.hpp"
#include "reactor/reactor_lock.hpp"
#include "reactor/serial_executor.hpp"

#include <bellows/detail/completion.hpp>
#include <bellows/options.hpp>
#include <bellows/stats.hpp>

#include <asio/execution_context.hpp>
#include <asio/io_context.hpp>
#include <asio/posix/stream_descriptor.hpp>
#include <asio/post.hpp>
#include <asio/steady_timer.hpp>
#include <asio/strand.hpp>

#include <atomic>
#include <chrono>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <thread>
#include <unordered_set>
#include <vector>

namespace bellows::detail {

class channel_state;
class acceptor_state;

class reactor final : public asio::execution_context::service {
 public:
  static inline asio::execution_context::id id;

  explicit reactor(asio::io_context& io);
  ~reactor() override;

  /// The reactor of the io_context behind `ex` (the io_context's own executor or a strand of
  /// it); throws invalid_argument for another kind of context.
  static reactor& of(const asio::any_io_executor& ex);
  static reactor& of(asio::io_context& io) { return asio::use_service<reactor>(io); }

  asio::io_context& io() noexcept { return io_; }
  asio::any_io_executor executor() { return io_.get_executor(); }
  /// Where the reactor's own handlers and the providers' run: one at a time, each under the
  /// lock (reactor/serial_executor.hpp).
  const asio::any_io_executor& serial() const noexcept { return serial_; }
  /// The lock every entry from the application takes: an initiating function, a cancellation,
  /// a release, a statistic, the end of a channel (reactor/reactor_lock.hpp).
  std::unique_lock<reactor_lock> hold() { return std::unique_lock(lock_); }
  void configure(const context_options& options);
  const context_options& options() const noexcept { return options_; }
  fabric::memory_budget& budget() noexcept { return budget_; }
  /// The eventfd this reactor sleeps on; pollers write it to wake it.
  int wake_fd() const noexcept { return wake_fd_; }

  /// The connector for URIs of `scheme`, made on first use; null for an unknown scheme.
  fabric::connector* connector_for(std::string_view scheme);
  /// Polls `p` on every pass from now on, until it is finished.
  void serve(std::shared_ptr<fabric::poller> p);

  void add_acceptor(acceptor_state* a) { acceptors_.insert(a); }
  void remove_acceptor(acceptor_state* a) { acceptors_.erase(a); }
  void add_channel(channel_state* ch) { channels_.insert(ch); }
  void remove_channel(channel_state* ch);
  /// Polls the channel on the next pass.
  void activate(channel_state* ch);
  /// Polls the channel on every pass while it waits for an ack or for credit.
  void watch(channel_state* ch, bool on);
  /// At most this many channels are polled on every round for their peers' sake (so that the
  /// peers skip their doorbells): the busiest few, not every channel of a server.
  static constexpr std::size_t max_polled_channels = 4;
  /// A pass hands over at most this many rounds of completions that completed at once before it
  /// polls again (reactor_pass.cpp).
  static constexpr unsigned max_chained_dispatches = 64;

  /// False once the io_context shuts down; completions must then be posted.
  bool takes_completions() const noexcept { return !shut_down_; }
  /// Dispatches a completion after the current poll, or in a pass scheduled now: never inside the
  /// initiating function, and without a round through the scheduler.
  void defer(std::unique_ptr<ready_completion> ready);

  /// A channel could not provision a ring within the budget.
  void provision_refused() noexcept { refused_ = true; }
  /// The budget is short: channels holding rings above the first tier ask their senders to shrink.
  bool under_pressure() const noexcept { return under_pressure_; }

  /// The time of the current poll round while a pass runs (fresh to a few microseconds), else the
  /// clock: for protocol deadlines, which are milliseconds.
  proto::clock_time now_for_deadlines();

  void op_started();
  void op_finished();
  /// A channel has something due at `deadline` (an ack timeout, an idle shrink): the reactor's
  /// one timer fires by then. Moving a deadline later costs nothing; the timer fires early and
  /// the channels look again.
  void deadline_at(proto::clock_time deadline);

  context_stats stats();
  /// For tests (the fault matrix): `observer` sees every protocol step this context's channels
  /// take, as they take it. Empty: nobody looks.
  void observe_steps(std::function<void(proto::step)> observer) { step_observer_ = std::move(observer); }
  void reached(proto::step s) {
    if (step_observer_) [[unlikely]]
      step_observer_(s);
  }
  /// Never sleep; for run_polling.
  void set_polling(bool on) { polling_ = on; }

 private:
  void shutdown() override;
  void schedule_pass();
  void pass();
  std::size_t poll_round();
  std::size_t spin_for_work(std::chrono::steady_clock::time_point slice_end);
  std::chrono::nanoseconds spin_budget() const;
  std::chrono::steady_clock::time_point read_clock();
  std::chrono::steady_clock::time_point last_clock_reading() const;
  void sleep();
  /// A channel that a doorbell just found busy is polled on every round from now on, and its
  /// peer told so, while there is room among the polled channels.
  void poll_every_round(channel_state* ch);
  /// Tells the peers of the polled channels to ring again, then looks at those channels once
  /// more in a pass scheduled now; false if none was polled. Called before the reactor stops
  /// polling (sleep, idle).
  bool stop_polling_every_round();
  void wake_from_idle();
  void go_idle();
  void watch_while_idle();
  void arrived_while_idle();
  void drain_wake_fd();
  void drop_finished_pollers();
  bool pollers_busy() const;
  void note_pass_thread();
  void run_deferred();
  void update_pressure();
  void arm_deadline_timer(proto::clock_time at);
  /// Polls the channels whose deadline has passed, and sets the timer for the next one.
  void expire_deadlines();

  asio::io_context& io_;
  reactor_lock lock_;
  // The pass is posted through the concrete type: through any_io_executor every post would
  // take a heap block, the executor being too large for its small-object buffer.
  serial_executor<asio::strand<asio::io_context::executor_type>> pass_executor_;
  asio::any_io_executor serial_;
  context_options options_;
  fabric::memory_budget budget_;
  int wake_fd_ = -1;
  asio::posix::stream_descriptor wake_;
  // One timer for every channel's deadline: re-arming a timer per channel and message cost a
  // timerfd_settime call on the hot path.
  asio::steady_timer deadline_timer_;
  std::optional<proto::clock_time> deadline_armed_;
  bool wake_armed_ = false;
  bool idle_ = true;
  bool pass_posted_ = false;
  bool polling_ = false;
  bool shut_down_ = false;
  bool in_poll_ = false;
  bool in_pass_ = false;
  bool refused_ = false;
  bool under_pressure_ = false;
  // Whether the io_context runs on more than one thread: handlers are then posted, not
  // dispatched from the pass (see note_pass_thread).
  bool pooled_ = false;
  std::thread::id first_pass_thread_;
  std::vector<std::unique_ptr<ready_completion>> deferred_;
  std::vector<std::unique_ptr<ready_completion>> running_;
  std::size_t ops_ = 0;
  std::size_t op_changes_ = 0;
  std::chrono::steady_clock::time_point last_work_;
  proto::clock_time pass_time_{};
  fabric::host host_;
  std::vector<std::shared_ptr<fabric::poller>> pollers_;
  std::map<std::string, std::unique_ptr<fabric::connector>, std::less<>> connectors_;
  std::unordered_set<channel_state*> channels_;
  std::unordered_set<acceptor_state*> acceptors_;
  std::vector<channel_state*> active_;
  std::vector<channel_state*> polling_now_;
  std::vector<channel_state*> watched_;
  std::vector<channel_state*> polled_;
  std::function<void(proto::step)> step_observer_;
  std::vector<int> idle_descriptors_;
  // Last member: its thread posts into this reactor, so it stops before anything else goes.
  idle_watch idle_watch_{[this] { asio::post(serial_, [this] { arrived_while_idle(); }); }};
};

}  // namespace bellows::detail
