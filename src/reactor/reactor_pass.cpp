// The reactor's pass: one round polls every poller and every channel with something to look
// at, hands the completions it produced to their handlers, and goes on polling (spinning a
// little when nothing turned up) until the slice is used or nothing is pending; then it
// schedules the next pass or sleeps on the eventfd. See reactor.hpp for the threading rule.
#include "reactor/reactor.hpp"

#include "reactor/channel_state.hpp"

#include <asio/post.hpp>

#include <algorithm>
#include <atomic>
#include <utility>

namespace bellows::detail {
namespace {

/// Tells the core that this thread is busy-waiting (saves power, frees the sibling hyperthread).
inline void cpu_relax() noexcept {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#elif defined(__aarch64__)
  asm volatile("yield");
#endif
}

}  // namespace

std::size_t reactor::poll_round() {
  std::size_t work = 0;
  for (std::size_t i = 0; i < pollers_.size(); ++i) {
    pollers_[i]->woke_up();
    work += pollers_[i]->poll();
  }
  polling_now_.swap(active_);
  for (std::size_t i = 0; i < polling_now_.size(); ++i) {
    if (channel_state* ch = polling_now_[i]) {
      ch->in_active = false;
      if (ch->poll(pass_time_) && !ch->polled) poll_every_round(ch);
      ++work;
    }
  }
  polling_now_.clear();
  // Their peers ring no doorbell for them: what the poll finds is the round's work.
  for (std::size_t i = 0; i < polled_.size(); ++i)
    if (channel_state* ch = polled_[i]) work += ch->poll(pass_time_) ? 1 : 0;
  std::erase(polled_, nullptr);
  for (std::size_t i = 0; i < watched_.size(); ++i)
    if (channel_state* ch = watched_[i]; ch != nullptr && !ch->polled) ch->poll(pass_time_);
  std::erase(watched_, nullptr);
  return work;
}

void reactor::poll_every_round(channel_state* ch) {
  if (polled_.size() >= max_polled_channels || !ch->may_be_polled()) return;
  ch->polled = true;
  polled_.push_back(ch);
  ch->set_polled(true);
}

bool reactor::stop_polling_every_round() {
  std::erase(polled_, nullptr);
  if (polled_.empty()) return false;
  for (auto* ch : polled_) {
    ch->polled = false;
    ch->set_polled(false);
  }
  // Pairs with the fence a peer's provider makes between its writes and reading the flag (see
  // fabric::provider::ring_doorbell_unless_polled): a peer that still saw the flag set skipped
  // its doorbell, and then the poll below, which comes after the flag's clearing, finds what
  // that doorbell would have announced.
  std::atomic_thread_fence(std::memory_order_seq_cst);
  for (auto* ch : polled_) activate(ch);
  polled_.clear();
  return true;
}

std::chrono::steady_clock::time_point reactor::read_clock() {
  const auto t = std::chrono::steady_clock::now();
  pass_time_ = t.time_since_epoch();
  return t;
}

std::chrono::steady_clock::time_point reactor::last_clock_reading() const {
  return std::chrono::steady_clock::time_point(
      std::chrono::duration_cast<std::chrono::steady_clock::duration>(pass_time_));
}

proto::clock_time reactor::now_for_deadlines() {
  return in_pass_ ? pass_time_ : std::chrono::steady_clock::now().time_since_epoch();
}

std::chrono::nanoseconds reactor::spin_budget() const {
  // A channel waiting for an ack (or for credit) expects it within a peer's pass or two. Asleep
  // when it comes, it pays a second wake-up on top of the peer's (tens of microseconds each on
  // a VM), so the handshake is waited for longer than other quiet.
  constexpr int while_watching = 8;
  return watched_.empty() ? options_.spin_before_sleep : options_.spin_before_sleep * while_watching;
}

std::size_t reactor::spin_for_work(std::chrono::steady_clock::time_point slice_end) {
  // Going back to the scheduler for every empty poll costs an epoll_wait each time; waiting here
  // instead keeps a ping-pong's round trip free of system calls.
  const auto until = std::min(slice_end, last_work_ + spin_budget());
  for (unsigned round = 1;; ++round) {
    cpu_relax();
    if (auto work = poll_round(); work != 0 || !active_.empty()) return work;
    // An application thread waits for the lock: let it in rather than spin past it.
    if (lock_.contended()) return 0;
    if (round % 32 == 0 && read_clock() >= until) return 0;
  }
}

void reactor::pass() {
  pass_posted_ = false;
  if (shut_down_) return;
  note_pass_thread();
  // The handlers a pass dispatches usually start the next operation at once (a ping-pong's
  // reply), so the pass goes on polling for its completion rather than returning to the
  // scheduler, whose every round costs an epoll_wait. The slice bounds how long the
  // application's other handlers wait behind it: 50 us, about what a timer's expiry through
  // epoll is late anyway; at 20 us the epoll_wait every slice cost a tenth of 8 B streaming.
  constexpr auto slice = std::chrono::microseconds(50);
  // A round takes a fraction of a microsecond and a clock read is a noticeable part of it, so the
  // clock is read every few rounds (and by the spin); deadlines are milliseconds.
  constexpr unsigned rounds_per_clock_read = 8;
  in_pass_ = true;
  struct leave_pass {
    bool& in_pass;
    ~leave_pass() { in_pass = false; }
  } leaving{in_pass_};
  const auto slice_end = read_clock() + slice;
  for (unsigned round = 1;; ++round) {
    in_poll_ = true;
    std::size_t found = poll_round();
    if (found == 0 && ops_ != 0 && active_.empty() && deferred_.empty()) found = spin_for_work(slice_end);
    in_poll_ = false;
    drop_finished_pollers();
    update_pressure();
    const bool dispatching = !deferred_.empty();
    run_deferred();
    // A handler whose next operation completed at once (a send with credit left, a receive
    // whose frame is already in the ring) is handed over without polling first: nothing a poll
    // finds can change that result, and at depth 1 a poll per message cost small-message
    // streaming a third of its rate. Operations that cannot complete at once end the chain
    // (a full ring, an empty one), and the bound keeps a handler that fails at once in a loop
    // from holding off the polls for long.
    for (unsigned chained = 0; chained < max_chained_dispatches && !deferred_.empty(); ++chained) run_deferred();
    const bool stop = (found == 0 && !dispatching) || (ops_ == 0 && deferred_.empty()) || shut_down_ || io_.stopped();
    const auto now = stop || round % rounds_per_clock_read == 0 ? read_clock() : last_clock_reading();
    // Operations starting and finishing count as activity: a receive's completion handler usually
    // starts the next send, and going idle in between would disarm and re-arm every link.
    if (found != 0 || std::exchange(op_changes_, 0) != 0) last_work_ = now;
    if (stop || now >= slice_end) break;
  }
  if (shut_down_) return;
  const auto now = last_clock_reading();
  if (!deferred_.empty() || !active_.empty() || now - last_work_ < spin_budget()) return schedule_pass();
  // Closing connections may still wait for their last writes to complete before they let go.
  if (ops_ == 0 && !pollers_busy()) {
    if (stop_polling_every_round()) return;
    for (std::size_t i = 0; i < pollers_.size(); ++i) pollers_[i]->last_look();
    // What it found may have started or finished something; the next pass decides again.
    if (ops_ != 0 || !deferred_.empty() || !active_.empty()) return schedule_pass();
    return go_idle();
  }
  if (polling_) return schedule_pass();
  if (stop_polling_every_round()) return;
  sleep();
}

void reactor::note_pass_thread() {
  // A handler dispatched from a pass runs inside the reactor's strand: with one thread that
  // saves a round through the scheduler, with a pool it would run every channel's handlers one
  // at a time. Passes seen on two threads mean a pool, for good.
  if (pooled_) return;
  const auto here = std::this_thread::get_id();
  if (first_pass_thread_ == std::thread::id()) first_pass_thread_ = here;
  pooled_ = here != first_pass_thread_;
}

void reactor::defer(std::unique_ptr<ready_completion> ready) {
  deferred_.push_back(std::move(ready));
  // Inside a pass the loop or its tail picks it up.
  if (!in_pass_) schedule_pass();
}

void reactor::run_deferred() {
  // The handlers run here, outside every channel's code and without the lock (the pass holds it
  // once, through the serial executor), so they may start operations, drop the last reference
  // to a channel, or wait for another thread that does. `running_` is the pass's own; the strand
  // keeps a second pass out meanwhile. One that throws leaves the rest for the next pass, and
  // the exception leaves io_context::run() as with any Asio handler.
  running_.swap(deferred_);
  std::size_t next = 0;
  std::exception_ptr thrown;
  lock_.unlock();
  try {
    if (pooled_) {
      while (next < running_.size()) running_[next++].release()->post();
    } else {
      while (next < running_.size()) running_[next++].release()->dispatch();
    }
  } catch (...) {
    thrown = std::current_exception();
  }
  lock_.lock();
  if (thrown) {
    for (; next < running_.size(); ++next) deferred_.push_back(std::move(running_[next]));
    running_.clear();
    schedule_pass();
    std::rethrow_exception(thrown);
  }
  running_.clear();
}

void reactor::sleep() {
  for (auto& p : pollers_) {
    if (!p->prepare_to_sleep()) {
      // Something raced in while we were announcing sleep.
      for (auto& other : pollers_) other->woke_up();
      return schedule_pass();
    }
  }
  if (wake_armed_) return;
  wake_armed_ = true;
  wake_.async_wait(asio::posix::descriptor_base::wait_read, [this](std::error_code ec) {
    if (ec == asio::error::operation_aborted && shut_down_) return;
    wake_armed_ = false;
    // A cancelled wait reads nothing: going idle cancels it, and the idle watch must still see a
    // wake that came in meanwhile.
    if (ec) return;
    drain_wake_fd();
    if (!idle_) {
      last_work_ = std::chrono::steady_clock::now();
      schedule_pass();
    }
  });
}

}  // namespace bellows::detail
