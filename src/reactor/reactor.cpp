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
  if (ch->polled) forget(polled_);
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
