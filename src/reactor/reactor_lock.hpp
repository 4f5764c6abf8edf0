#pragma once
// The reactor's lock. Recursive, because dropping a channel or a handler inside the reactor
// enters it again; and cheaper than std::recursive_mutex when nobody waits, which is nearly
// always (every send takes it): one compare-exchange to take it, one store to give it back. A
// thread that finds it taken says so (contended()), so that a reactor spinning with it ends its
// pass early, then sleeps on the owner word until the owner lets go.

#include <atomic>
#include <thread>

namespace bellows::detail {

class reactor_lock {
 public:
  void lock() noexcept {
    const auto me = std::this_thread::get_id();
    if (owner_.load(std::memory_order_relaxed) == me) {
      ++depth_;
      return;
    }
    if (!take(me)) wait_to_take(me);
    depth_ = 1;
  }

  bool try_lock() noexcept {
    const auto me = std::this_thread::get_id();
    if (owner_.load(std::memory_order_relaxed) == me) {
      ++depth_;
      return true;
    }
    if (!take(me)) return false;
    depth_ = 1;
    return true;
  }

  void unlock() noexcept {
    if (--depth_ != 0) return;
    // Sequentially consistent with the waiter's count and load below: either it sees the lock
    // free, or this sees it counted and wakes it.
    owner_.store(std::thread::id(), std::memory_order_seq_cst);
    if (waiting_.load(std::memory_order_seq_cst) != 0) owner_.notify_all();
  }

  /// Some thread waits for the lock.
  bool contended() const noexcept { return waiting_.load(std::memory_order_relaxed) != 0; }

 private:
  bool take(std::thread::id me) noexcept {
    std::thread::id none;
    return owner_.compare_exchange_strong(none, me, std::memory_order_acquire, std::memory_order_relaxed);
  }

  void wait_to_take(std::thread::id me) noexcept {
    waiting_.fetch_add(1, std::memory_order_seq_cst);
    for (;;) {
      const auto holder = owner_.load(std::memory_order_seq_cst);
      if (holder == std::thread::id()) {
        if (take(me)) break;
        continue;
      }
      owner_.wait(holder, std::memory_order_seq_cst);
    }
    waiting_.fetch_sub(1, std::memory_order_relaxed);
  }

  std::atomic<std::thread::id> owner_{};
  std::atomic<unsigned> waiting_{0};
  unsigned depth_ = 0;  // only the owner touches it
};

}  // namespace bellows::detail
