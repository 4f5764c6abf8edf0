#pragma once
// A type-erased, move-only completion handler: it keeps the handler's executor busy while the
// operation is pending and, when completed, hands the handler to its associated executor, where
// the handler's cancellation slot is cleared before it runs. The reactor binds the result and
// dispatches it once its poll is over, or in a pass it schedules when the operation completed
// inside its initiating function, so that a reply can be written without a round through the
// scheduler; no handler ever runs inside a channel's own code or inside an initiating function.
// It posts instead when the io_context runs on a pool of threads (handlers of different channels
// then run in parallel) and when the reactor is gone.

#include <bellows/detail/executor_target.hpp>
#include <bellows/detail/operation_memory.hpp>

#include <asio/any_io_executor.hpp>
#include <asio/associated_cancellation_slot.hpp>
#include <asio/associated_executor.hpp>
#include <asio/dispatch.hpp>
#include <asio/execution/outstanding_work.hpp>
#include <asio/io_context.hpp>
#include <asio/post.hpp>
#include <asio/prefer.hpp>

#include <memory>
#include <optional>
#include <tuple>
#include <type_traits>
#include <utility>

namespace bellows::detail {

/// Whether `ex` is (or wraps) the executor of an io_context this thread is running: then a
/// dispatch may run the handler at once, which is what asio::dispatch would do, without its
/// type-erased wrapper (a heap block whenever Asio's per-thread cache is short).
template <class Executor>
bool runs_here(const Executor& ex) noexcept {
  using plain = asio::io_context::executor_type;
  using tracked =
      std::decay_t<decltype(asio::prefer(std::declval<plain>(), asio::execution::outstanding_work.tracked))>;
  if constexpr (std::is_same_v<Executor, plain> || std::is_same_v<Executor, tracked>) {
    return ex.running_in_this_thread();
  } else if constexpr (std::is_same_v<Executor, asio::any_io_executor>) {
    // The plain one first: it is what the handler keeps when the reactor counts its work, and
    // a type that does not match costs a comparison of the types' names.
    if (const auto* io = executor_target<plain>(ex)) return io->running_in_this_thread();
    if (const auto* io = executor_target<tracked>(ex)) return io->running_in_this_thread();
    return false;
  } else {
    return false;
  }
}

/// A completion whose result is already bound; dispatch() hands it to the handler's executor,
/// which runs it at once when the caller is already running on that executor.
class ready_completion {
 public:
  virtual ~ready_completion() = default;
  /// Consumes the object: it deletes itself before the handler runs.
  virtual void dispatch() = 0;
  /// As dispatch(), but never runs the handler on this thread.
  virtual void post() = 0;
};

template <class... Args>
class completion {
 public:
  completion() noexcept = default;

  /// `kept_busy`: an io_context that something else keeps from running out of work until this
  /// completion has been handed over (the reactor does, while it counts the operation). A
  /// handler whose executor is that io_context's own then costs no outstanding-work count.
  template <class Handler, class IoExecutor>
  completion(Handler&& handler, const IoExecutor& io_executor, const asio::io_context* kept_busy = nullptr)
      : impl_(std::make_unique<impl<std::decay_t<Handler>, IoExecutor>>(std::forward<Handler>(handler), io_executor,
                                                                        kept_busy)) {}

  explicit operator bool() const noexcept { return impl_ != nullptr; }

  /// Posts the handler with `args`; afterwards this completion is empty.
  void post(Args... args) {
    auto* p = impl_.release();
    p->post_and_destroy(std::move(args)...);
  }

  /// Binds `args` for a later dispatch(); afterwards this completion is empty.
  std::unique_ptr<ready_completion> bind(Args... args) {
    auto* p = impl_.release();
    return p->bind(std::move(args)...);
  }

 private:
  struct base {
    virtual ~base() = default;
    virtual void post_and_destroy(Args&&... args) = 0;
    virtual std::unique_ptr<ready_completion> bind(Args&&... args) = 0;
  };

  template <class Handler, class IoExecutor>
  struct impl final : base, ready_completion {
    using handler_executor = asio::associated_executor_t<Handler, IoExecutor>;
    using tracked_executor = std::decay_t<decltype(asio::prefer(std::declval<handler_executor>(),
                                                                asio::execution::outstanding_work.tracked))>;

    static void* operator new(std::size_t bytes) { return operation_memory::allocate(bytes); }
    static void operator delete(void* block, std::size_t bytes) noexcept { operation_memory::deallocate(block, bytes); }

    impl(Handler h, const IoExecutor& io, const asio::io_context* kept_busy)
        : handler(std::move(h)), work(keep_busy(asio::get_associated_executor(handler, io), kept_busy)) {}

    static tracked_executor keep_busy(handler_executor ex, const asio::io_context* kept_busy) {
      if constexpr (std::is_same_v<handler_executor, asio::any_io_executor>) {
        if (kept_busy != nullptr) {
          if (const auto* io = executor_target<asio::io_context::executor_type>(ex); io && &io->context() == kept_busy)
            return ex;
        }
      }
      return asio::prefer(ex, asio::execution::outstanding_work.tracked);
    }

    void post_and_destroy(Args&&... args) override {
      bound.emplace(std::move(args)...);
      hand_over([](auto& ex, auto&& fn) { asio::post(ex, std::move(fn)); });
    }

    std::unique_ptr<ready_completion> bind(Args&&... args) override {
      bound.emplace(std::move(args)...);
      return std::unique_ptr<ready_completion>(this);
    }

    void dispatch() override {
      if (runs_here(work)) {
        // What asio::dispatch would do, without moving the executor out first.
        auto slot = asio::get_associated_cancellation_slot(handler);
        auto h = std::move(handler);
        auto args = std::move(*bound);
        delete this;
        if (slot.is_connected()) slot.clear();
        return std::apply(std::move(h), std::move(args));
      }
      hand_over([](auto& ex, auto&& fn) { asio::dispatch(ex, std::move(fn)); });
    }

    void post() override {
      hand_over([](auto& ex, auto&& fn) { asio::post(ex, std::move(fn)); });
    }

    template <class How>
    void hand_over(How how) {
      // The slot is cleared where the handler runs: the application may emit a cancellation on
      // that executor (its strand) right up to then, and a slot is not safe across threads. A
      // cancellation that arrives meanwhile finds its operation finished and does nothing.
      auto slot = asio::get_associated_cancellation_slot(handler);
      auto ex = std::move(work);
      auto h = std::move(handler);
      auto args = std::move(*bound);
      delete this;
      how(ex, [slot, h = std::move(h), args = std::move(args)]() mutable {
        if (slot.is_connected()) slot.clear();
        std::apply(std::move(h), std::move(args));
      });
    }

    Handler handler;
    tracked_executor work;
    std::optional<std::tuple<Args...>> bound;
  };

  std::unique_ptr<base> impl_;
};

}  // namespace bellows::detail
