// Sends a few messages to an echo server and checks what comes back.
//   bellows_echo_client [shm://NAME]

#include <bellows/bellows.hpp>

#include <asio/co_spawn.hpp>
#include <asio/io_context.hpp>
#include <asio/use_awaitable.hpp>
#include <asio/use_future.hpp>

#include <iostream>
#include <string>
#include <vector>

using asio::use_awaitable;

asio::awaitable<int> run_client(std::string uri) {
  auto ex = co_await asio::this_coro::executor;
  bellows::channel ch = co_await bellows::async_connect(ex, uri, use_awaitable);
  int failures = 0;
  for (std::size_t size : {8u, 1000u, 100'000u, 3'000'000u}) {
    std::vector<std::byte> message(size), reply(size);
    for (std::size_t i = 0; i < size; ++i) message[i] = static_cast<std::byte>(i * 7 + size);
    co_await ch.async_send(asio::buffer(message), use_awaitable);
    const std::size_t n = co_await ch.async_receive(asio::buffer(reply), use_awaitable);
    const bool same = n == size && reply == message;
    failures += same ? 0 : 1;
    const auto s = ch.stats();
    std::cout << size << " B echoed " << (same ? "intact" : "CORRUPT") << "; send tier " << s.send_tier << ", "
              << s.registered_bytes << " B registered on this side\n";
  }
  co_await ch.async_close(use_awaitable);
  co_return failures;
}

int main(int argc, char** argv) {
  constexpr const char* usage =
      "usage: bellows_echo_client [URI]\n"
      "  URI  the echo server's: shm://NAME (default shm://echo) or rdma://HOST:PORT\n";
  const std::string first = argc > 1 ? argv[1] : "";
  if (argc == 2 && (first == "--help" || first == "-h")) {
    std::cout << usage;
    return 0;
  }
  if (argc > 2 || first.starts_with("-")) {
    std::cerr << "bellows_echo_client: unexpected argument\n" << usage;
    return 2;
  }
  const std::string uri = argc > 1 ? first : "shm://echo";
  asio::io_context io;
  auto result = asio::co_spawn(io, run_client(uri), asio::use_future);
  io.run();
  try {
    return result.get() == 0 ? 0 : 1;
  } catch (const std::exception& e) {
    std::cerr << "echo client: " << e.what() << "\n";
    return 2;
  }
}
