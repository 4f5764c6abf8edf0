#pragma once
// The executor of everything the reactor runs by itself: its passes, its timers, and the handlers
// of every provider's sockets and descriptors. It is a strand of the io_context, so no two of
// them run at once however many threads run the io_context; and each holds the reactor's lock
// while it runs, so none runs while an application thread is inside an initiating function or
// drops a channel. Providers get it as an any_io_executor and never see the lock.

#include "reactor/reactor_lock.hpp"

#include <asio/execution.hpp>
#include <asio/prefer.hpp>
#include <asio/query.hpp>
#include <asio/require.hpp>

#include <mutex>
#include <type_traits>
#include <utility>

namespace bellows::detail {

template <class Property, class Executor>
concept queryable_on = asio::can_query<const Executor&, Property>::value;
template <class Property, class Executor>
concept requirable_on = asio::can_require<const Executor&, Property>::value;
template <class Property, class Executor>
concept preferable_on = asio::can_prefer<const Executor&, Property>::value;

template <class Strand>
class serial_executor {
 public:
  serial_executor(Strand strand, reactor_lock& lock) noexcept : strand_(std::move(strand)), lock_(&lock) {}

  template <class Function>
  void execute(Function&& f) const {
    strand_.execute([lock = lock_, fn = std::decay_t<Function>(std::forward<Function>(f))]() mutable {
      std::lock_guard hold(*lock);
      std::move(fn)();
    });
  }

  template <queryable_on<Strand> Property>
  decltype(auto) query(const Property& p) const noexcept(asio::is_nothrow_query<const Strand&, Property>::value) {
    return asio::query(strand_, p);
  }

  template <requirable_on<Strand> Property>
  auto require(const Property& p) const {
    using result = std::decay_t<typename asio::require_result<const Strand&, Property>::type>;
    return serial_executor<result>(asio::require(strand_, p), *lock_);
  }

  template <preferable_on<Strand> Property>
  auto prefer(const Property& p) const {
    using result = std::decay_t<typename asio::prefer_result<const Strand&, Property>::type>;
    return serial_executor<result>(asio::prefer(strand_, p), *lock_);
  }

  friend bool operator==(const serial_executor& a, const serial_executor& b) noexcept {
    return a.strand_ == b.strand_ && a.lock_ == b.lock_;
  }
  friend bool operator!=(const serial_executor& a, const serial_executor& b) noexcept { return !(a == b); }

 private:
  Strand strand_;
  reactor_lock* lock_;
};

}  // namespace bellows::detail
