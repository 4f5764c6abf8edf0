#include "modes.hpp"

#include "command_line.hpp"

#include <bellows/bellows.hpp>

#include <asio/co_spawn.hpp>
#include <asio/experimental/as_tuple.hpp>
#include <asio/steady_timer.hpp>
#include <asio/use_awaitable.hpp>

#include <unistd.h>
#include <chrono>
#include <exception>
#include <optional>

using asio::use_awaitable;
using clock_type = std::chrono::steady_clock;

namespace perf {

namespace {

/// Takes `count` messages of up to `size` bytes, then answers with one byte.
asio::awaitable<void> local_sink(bellows::acceptor& acceptor, std::uint64_t size, std::uint64_t count) {
  bellows::channel ch = co_await acceptor.async_accept(use_awaitable);
  std::vector<std::byte> into(size);
  for (std::uint64_t i = 0; i < count; ++i) co_await ch.async_receive(asio::buffer(into), use_awaitable);
  const std::byte done[1] = {};
  co_await ch.async_send(asio::buffer(done), use_awaitable);
  co_await ch.async_receive(asio::buffer(into), asio::experimental::as_tuple(use_awaitable));  // the peer's close
}

asio::awaitable<void> local_stream(const settings& s, std::uint64_t size, reporter& out) {
  auto ex = co_await asio::this_coro::executor;
  const auto count = s.iterations ? s.iterations : default_iterations("bw", size);
  const auto warmup = warmup_for(s.warmup, count);
  // A name of its own per run: a closed acceptor's name may not be free again at once.
  static int runs = 0;
  const std::string uri = "shm://perf-local-" + std::to_string(::getpid()) + "-" + std::to_string(++runs);
  bellows::acceptor acceptor(ex, uri);
  asio::steady_timer sink_done(ex, clock_type::time_point::max());
  std::exception_ptr sink_failure;
  bool sink_finished = false;
  asio::co_spawn(ex, local_sink(acceptor, size, warmup + count), [&](std::exception_ptr e) {
    sink_failure = e;
    sink_finished = true;
    sink_done.cancel();
  });
  bellows::channel ch = co_await bellows::async_connect(ex, uri, channel_options_for(s), use_awaitable);
  std::vector<std::byte> block(size, std::byte{5});
  for (std::uint64_t i = 0; i < warmup; ++i) co_await ch.async_send(asio::buffer(block), use_awaitable);
  const auto t0 = clock_type::now();
  for (std::uint64_t i = 0; i < count; ++i) co_await ch.async_send(asio::buffer(block), use_awaitable);
  std::byte done[1];
  co_await ch.async_receive(asio::buffer(done), use_awaitable);
  const double us = std::chrono::duration<double, std::micro>(clock_type::now() - t0).count();
  co_await ch.async_close(use_awaitable);
  // The sink may have ended before this wait began, when the cancel found nothing to cancel.
  if (!sink_finished) co_await sink_done.async_wait(asio::experimental::as_tuple(use_awaitable));
  if (sink_failure) std::rethrow_exception(sink_failure);

  result r("local", "shm", size, count);
  r.avg_us = us / static_cast<double>(count);
  r.mb_per_s = static_cast<double>(size * count) / us;
  r.msg_per_s = static_cast<double>(count) / us * 1e6;
  out.add(r);
}

}  // namespace

asio::awaitable<void> local(const settings& s, reporter& out) {
  for (const auto size : s.sizes.empty() ? std::vector<std::uint64_t>{8, 512, 4096} : s.sizes)
    co_await local_stream(s, size, out);
}

}  // namespace perf
