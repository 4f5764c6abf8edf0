#include "reactor/reactor.hpp"

#include "reactor/acceptor_state.hpp"
#include "reactor/channel_state.hpp"

#include "fabric/registry.hpp"

#include <bellows/connect.hpp>
#include <bellows/detail/executor_target.hpp>
#include <bellows/error.hpp>

#include <asio/post.hpp>
#include <asio/strand.hpp>

#include <sys/eventfd.h>
#include <unistd.h>
#include <algorithm>
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

reactor::reactor(asio::io_context& io)
    : asio::execution_context::service(io),
      io_(io),
      pass_executor_(asio::make_strand(io), lock_),
      serial_(pass_executor_),
      wake_(serial_),
      deadline_timer_(serial_),
      host_{serial_, budget_, -1, options_, [this](std::shared_ptr<fabric::poller> p) { serve(std::move(p)); }} {
  wake_fd_ = ::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  if (wake_fd_ < 0) throw std::system_error(errno, std::system_category(), "bellows reactor eventfd");
  host_.wake_fd = wake_fd_;
  wake_.assign(wake_fd_);
  last_work_ = std::chrono::steady_clock::now();
  budget_.warm_limit = options_.warm_ring_bytes;
}

reactor::~reactor() = default;

namespace {

using io_executor = asio::io_context::executor_type;
using tracked_io_executor =
    std::decay_t<decltype(asio::prefer(std::declval<io_executor>(), asio::execution::outstanding_work.tracked))>;

/// The io_context behind an io_context executor, tracked or not, or a strand of one (of any
/// depth); null otherwise. execution_context is not polymorphic, so the types are named.
asio::io_context* io_context_of(const asio::any_io_executor& ex) {
  if (const auto* plain = executor_target<io_executor>(ex)) return &plain->context();
  if (const auto* tracked = executor_target<tracked_io_executor>(ex)) return &tracked->context();
  if (const auto* strand = executor_target<asio::strand<io_executor>>(ex))
    return &strand->get_inner_executor().context();
  if (const auto* strand = executor_target<asio::strand<tracked_io_executor>>(ex))
    return &strand->get_inner_executor().context();
  if (const auto* strand = executor_target<asio::strand<asio::any_io_executor>>(ex))
    return io_context_of(strand->get_inner_executor());
  return nullptr;
}

}  // namespace

reactor& reactor::of(const asio::any_io_executor& ex) {
  auto* io = ex ? io_context_of(ex) : nullptr;
  if (io == nullptr)
    throw std::system_error(make_error_code(error::invalid_argument),
                            "bellows needs the executor of an io_context or of a strand of one");
  return asio::use_service<reactor>(*io);
}

void reactor::configure(const context_options& options) {
  auto held = hold();
  options_ = options;
  budget_.limit = options.registered_memory_budget;
  budget_.warm_limit = options.warm_ring_bytes;
}

void reactor::shutdown() {
  auto held = hold();
  shut_down_ = true;
  idle_watch_.stop();
  for (auto* ch : channels_) ch->shutdown();
  for (auto* a : acceptors_) a->shutdown();
  for (auto& p : pollers_) p->shutdown();
  pollers_.clear();
  connectors_.clear();
  // As Asio does with posted handlers at shutdown: destroyed, never invoked.
  deferred_.clear();
  deadline_timer_.cancel();
  asio::error_code ignored;
  wake_.close(ignored);
}

fabric::connector* reactor::connector_for(std::string_view scheme) {
  if (auto it = connectors_.find(scheme); it != connectors_.end()) return it->second.get();
  auto made = fabric::make_connector(scheme, host_);
  if (!made) return nullptr;
  return connectors_.emplace(std::string(scheme), std::move(made)).first->second.get();
}

void reactor::serve(std::shared_ptr<fabric::poller> p) {
  if (!idle_) p->arm();
  pollers_.push_back(std::move(p));
}

void reactor::remove_channel(channel_state* ch) {
  channels_.erase(ch);
  // A pass drops the link if this was its last channel, even when nothing else is pending.
  schedule_pass();
  auto forget = [ch](std::vector<channel_state*>& list) {
    std::replace(list.begin(), list.end(), ch, static_cast<channel_state*>(nullptr));
  };
  if (ch->in_active) forget(active_);
  forget(polling_now_);
  if (ch->watched) forget(watched_);
}

void reactor::activate(channel_state* ch) {
  if (!ch->in_active) {
    ch->in_active = true;
    active_.push_back(ch);
  }
  schedule_pass();
}

void reactor::watch(channel_state* ch, bool on) {
  if (on == ch->watched) return;
  ch->watched = on;
  if (on) {
    watched_.push_back(ch);
  } else {
    std::replace(watched_.begin(), watched_.end(), ch, static_cast<channel_state*>(nullptr));
  }
}

void reactor::op_started() {
  ++ops_;
  ++op_changes_;
  if (idle_) wake_from_idle();
}

void reactor::op_finished() {
  ++op_changes_;
  // A later pass that finds nothing pending lets go of the io_context (see go_idle).
  if (ops_ > 0 && --ops_ == 0) schedule_pass();
}

void reactor::wake_from_idle() {
  idle_ = false;
  idle_watch_.pause();
  for (auto& p : pollers_) p->arm();
  last_work_ = std::chrono::steady_clock::now();
  // Doorbells rung while nothing was pending wait in the rings; the first pass takes them.
  schedule_pass();
}

void reactor::go_idle() {
  // Nothing is pending anywhere: hold no outstanding work so io_context::run() can return.
  idle_ = true;
  for (auto& p : pollers_) p->disarm();
  deadline_armed_.reset();
  deadline_timer_.cancel();
  if (wake_armed_) {
    asio::error_code ignored;
    wake_.cancel(ignored);
  }
  watch_while_idle();
}

void reactor::watch_while_idle() {
  // Nothing can arrive without a poller; the first one served makes the thread worth its cost.
  if (pollers_.empty()) return;
  idle_descriptors_.assign(1, wake_fd_);
  for (auto& p : pollers_) {
    if (!p->prepare_to_idle(idle_descriptors_)) {
      // Something raced in while we were announcing sleep: take it in a pass, then try again.
      for (auto& other : pollers_) other->woke_up();
      return schedule_pass();
    }
  }
  idle_watch_.watch(idle_descriptors_);
}

void reactor::arrived_while_idle() {
  if (shut_down_) return;
  // The eventfd is read here rather than by the watch thread, so a wake can never be taken away
  // from the pass that follows; the pass then looks at every ring itself.
  drain_wake_fd();
  last_work_ = std::chrono::steady_clock::now();
  schedule_pass();
}

void reactor::drain_wake_fd() {
  std::uint64_t count;
  [[maybe_unused]] auto n = ::read(wake_fd_, &count, sizeof count);
}

void reactor::schedule_pass() {
  if (pass_posted_ || shut_down_) return;
  pass_posted_ = true;
  asio::post(pass_executor_, [this] { pass(); });
}

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
      ch->poll(pass_time_);
      ++work;
    }
  }
  polling_now_.clear();
  for (std::size_t i = 0; i < watched_.size(); ++i)
    if (channel_state* ch = watched_[i]) ch->poll(pass_time_);
  std::erase(watched_, nullptr);
  return work;
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
  // application's other handlers wait behind it.
  constexpr auto slice = std::chrono::microseconds(20);
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
    for (std::size_t i = 0; i < pollers_.size(); ++i) pollers_[i]->last_look();
    // What it found may have started or finished something; the next pass decides again.
    if (ops_ != 0 || !deferred_.empty() || !active_.empty()) return schedule_pass();
    return go_idle();
  }
  if (polling_) return schedule_pass();
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

void reactor::update_pressure() {
  // Pressure goes on when a ring was refused or seven eighths of the budget are taken, and off
  // once half of it is free again; the gap keeps it from flapping with every ring.
  const bool refused = std::exchange(refused_, false);
  if (budget_.limit == SIZE_MAX) return;
  // Registrations kept warm for reuse count against the budget: when it runs short they go
  // first, or pressure would never lift.
  if (refused || under_pressure_ || budget_.used > budget_.limit / 8 * 7)
    for (auto& p : pollers_) p->trim();
  const bool short_now = refused || budget_.used > budget_.limit / 8 * 7;
  const bool relieved = budget_.used <= budget_.limit / 2;
  if (under_pressure_ == short_now || (under_pressure_ && !relieved)) return;
  under_pressure_ = short_now;
  for (auto* ch : channels_) ch->set_pressure(under_pressure_);
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

void reactor::drop_finished_pollers() {
  std::erase_if(pollers_, [](const std::shared_ptr<fabric::poller>& p) {
    if (!p->finished()) return false;
    // Its pending socket wait would otherwise keep the io_context from running out of work.
    p->disarm();
    p->dropped();
    return true;
  });
}

bool reactor::pollers_busy() const {
  return std::any_of(pollers_.begin(), pollers_.end(), [](const auto& p) { return p->busy(); });
}

context_stats reactor::stats() {
  auto held = hold();
  context_stats s;
  s.channels = channels_.size();
  for (const auto& p : pollers_) s.links += p->connections();
  s.registered_bytes = budget_.used;
  s.registered_memory_budget = budget_.limit;
  for (const auto* ch : channels_) {
    const auto c = ch->stats();
    if (s.registered_bytes_by_tier.size() < c.registered_bytes_by_tier.size())
      s.registered_bytes_by_tier.resize(c.registered_bytes_by_tier.size());
    for (std::size_t t = 0; t < c.registered_bytes_by_tier.size(); ++t)
      s.registered_bytes_by_tier[t] += c.registered_bytes_by_tier[t];
    s.enlargements += c.enlargements;
    s.shrinks += c.shrinks;
    s.denials += c.denials;
    s.messages_sent += c.messages_sent;
    s.bytes_sent += c.bytes_sent;
    s.messages_received += c.messages_received;
    s.bytes_received += c.bytes_received;
  }
  return s;
}

}  // namespace bellows::detail

namespace bellows {

void configure(asio::io_context& io, const context_options& options) { detail::reactor::of(io).configure(options); }

context_stats stats(asio::io_context& io) { return detail::reactor::of(io).stats(); }

void run_polling(asio::io_context& io) {
  auto& r = detail::reactor::of(io);
  {
    auto held = r.hold();
    r.set_polling(true);
  }
  while (!io.stopped()) io.poll();
  auto held = r.hold();
  r.set_polling(false);
}

}  // namespace bellows
