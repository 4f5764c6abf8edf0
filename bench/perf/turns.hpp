#pragma once
// Operations kept in flight at a fixed depth, as ucx_perftest keeps its window of sends or
// receives: `depth` coroutines take turns until `count` operations were started.

#include <asio/co_spawn.hpp>
#include <asio/experimental/as_tuple.hpp>
#include <asio/steady_timer.hpp>
#include <asio/use_awaitable.hpp>

#include <cstdint>
#include <exception>

namespace perf {

namespace detail {

template <class Operation>
struct turns {
  std::uint64_t count;
  Operation* operation;
  std::uint64_t started = 0;
  std::uint64_t running;
  std::exception_ptr failure;
  asio::steady_timer all_done;
};

template <class Operation>
asio::awaitable<void> take_turns(turns<Operation>* t, std::uint64_t lane) {
  while (t->started < t->count && !t->failure) {
    ++t->started;
    co_await (*t->operation)(lane);
  }
}

}  // namespace detail

/// Runs `operation(lane)` `count` times, at most `depth` at once; `lane` (below `depth`) names the
/// coroutine running it, for operations that need memory of their own. Throws the first failure.
template <class Operation>
asio::awaitable<void> in_turns(std::uint64_t count, std::uint64_t depth, Operation operation) {
  auto ex = co_await asio::this_coro::executor;
  detail::turns<Operation> t{count, &operation, 0,
                             depth, nullptr,    asio::steady_timer(ex, asio::steady_timer::time_point::max())};
  for (std::uint64_t lane = 0; lane < depth; ++lane)
    asio::co_spawn(ex, detail::take_turns(&t, lane), [p = &t](std::exception_ptr e) {
      if (e && !p->failure) p->failure = e;
      if (--p->running == 0) p->all_done.cancel();
    });
  co_await t.all_done.async_wait(asio::experimental::as_tuple(asio::use_awaitable));
  if (t.failure) std::rethrow_exception(t.failure);
}

}  // namespace perf
