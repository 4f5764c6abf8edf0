// Counts heap allocations while two channels over shm trade small messages in steady state:
// after a warm-up, a send and a receive must allocate nothing (issue 18: no allocation per
// operation). A separate binary, because it replaces the global operator new.
//   bellows_alloc_test            exit 0 when the measured rounds allocated at most once per 1,000 operations

#include <bellows/bellows.hpp>

#include <asio/co_spawn.hpp>
#include <asio/detached.hpp>
#include <asio/io_context.hpp>
#include <asio/use_awaitable.hpp>

#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <new>
#include <string>

namespace {
std::atomic<long> allocations{0};
}  // namespace

void* operator new(std::size_t n) {
  allocations.fetch_add(1, std::memory_order_relaxed);
  if (void* p = std::malloc(n == 0 ? 1 : n)) return p;
  throw std::bad_alloc();
}
void operator delete(void* p) noexcept { std::free(p); }
void operator delete(void* p, std::size_t) noexcept { std::free(p); }

namespace {

using asio::use_awaitable;

/// Ping-pong of 8 B messages: `rounds` round trips, then the allocation count of the last `measured`.
asio::awaitable<void> ping(bellows::channel& near, bellows::channel& far, int warmup, int measured, long& counted) {
  std::byte out[8] = {}, in[8] = {}, echo[8] = {};
  auto exchange = [&]() -> asio::awaitable<void> {
    co_await near.async_send(asio::buffer(out), use_awaitable);
    co_await far.async_receive(asio::buffer(echo), use_awaitable);
    co_await far.async_send(asio::buffer(echo), use_awaitable);
    co_await near.async_receive(asio::buffer(in), use_awaitable);
  };
  for (int i = 0; i < warmup; ++i) co_await exchange();
  const long before = allocations.load();
  for (int i = 0; i < measured; ++i) co_await exchange();
  counted = allocations.load() - before;
}

}  // namespace

int main() {
  const std::string uri = "shm://alloc-test-" + std::to_string(::getpid());
  asio::io_context io;
  bellows::acceptor acc(io.get_executor(), uri);
  bellows::channel near, far;
  acc.async_accept([&](std::error_code ec, bellows::channel c) {
    if (!ec) far = std::move(c);
  });
  bellows::async_connect(io.get_executor(), uri, [&](std::error_code ec, bellows::channel c) {
    if (!ec) near = std::move(c);
  });
  for (int i = 0; i < 10000 && !(near.is_open() && far.is_open()); ++i) io.run_for(std::chrono::milliseconds(1));
  if (!near.is_open() || !far.is_open()) {
    std::fprintf(stderr, "alloc test: the channel did not open\n");
    return 1;
  }
  constexpr int warmup = 2000, measured = 10000, operations = measured * 4;
  long counted = -1;
  bool finished = false;
  asio::co_spawn(io, ping(near, far, warmup, measured, counted), [&](std::exception_ptr e) { finished = !e; });
  io.restart();
  io.run_for(std::chrono::seconds(60));
  if (!finished) {
    std::fprintf(stderr, "alloc test: the exchange did not finish within 60 s\n");
    return 1;
  }
  std::printf("%ld heap allocations in %d operations (8 B sends and receives) after %d warm-up round trips\n", counted,
              operations, warmup);
  return counted * 1000 <= operations ? 0 : 1;
}
