#pragma once
// A type-erased, move-only completion handler: it keeps the handler's executor busy while the
// operation is pending and, when completed, clears the handler's cancellation slot and posts the
// handler to its associated executor. Completions are always posted, never run inside the
// initiating function or inside the reactor's poll.

#include <asio/associated_cancellation_slot.hpp>
#include <asio/associated_executor.hpp>
#include <asio/execution/outstanding_work.hpp>
#include <asio/post.hpp>
#include <asio/prefer.hpp>

#include <memory>
#include <tuple>
#include <type_traits>
#include <utility>

namespace bellows::detail {

template <class... Args>
class completion {
 public:
  completion() noexcept = default;

  template <class Handler, class IoExecutor>
  completion(Handler&& handler, const IoExecutor& io_executor)
      : impl_(std::make_unique<impl<std::decay_t<Handler>, IoExecutor>>(std::forward<Handler>(handler), io_executor)) {}

  explicit operator bool() const noexcept { return impl_ != nullptr; }

  /// Posts the handler with `args`; afterwards this completion is empty.
  void post(Args... args) {
    auto* p = impl_.release();
    p->post_and_destroy(std::move(args)...);
  }

 private:
  struct base {
    virtual ~base() = default;
    virtual void post_and_destroy(Args&&... args) = 0;
  };

  template <class Handler, class IoExecutor>
  struct impl final : base {
    using handler_executor = asio::associated_executor_t<Handler, IoExecutor>;
    using tracked_executor = std::decay_t<decltype(asio::prefer(std::declval<handler_executor>(),
                                                                asio::execution::outstanding_work.tracked))>;

    impl(Handler h, const IoExecutor& io)
        : handler(std::move(h)),
          work(asio::prefer(asio::get_associated_executor(handler, io), asio::execution::outstanding_work.tracked)) {}

    void post_and_destroy(Args&&... args) override {
      auto slot = asio::get_associated_cancellation_slot(handler);
      if (slot.is_connected()) slot.clear();
      auto ex = std::move(work);
      auto h = std::move(handler);
      auto bound = std::make_tuple(std::move(args)...);
      delete this;
      asio::post(
          ex, [h = std::move(h), bound = std::move(bound)]() mutable { std::apply(std::move(h), std::move(bound)); });
    }

    Handler handler;
    tracked_executor work;
  };

  std::unique_ptr<base> impl_;
};

}  // namespace bellows::detail
