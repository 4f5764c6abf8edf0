// Echoes every message back on every channel opened to URI, until the peer closes: a
// thread-pool server. The io_context runs on THREADS threads (1 by default); each accepted
// channel gets a strand of its own, so its handlers never run at once while different channels
// run on different threads.
//   bellows_echo_server [URI [THREADS]]     URI: shm://NAME (default shm://echo) or rdma://HOST:PORT

#include <bellows/bellows.hpp>

#include <asio/co_spawn.hpp>
#include <asio/detached.hpp>
#include <asio/experimental/as_tuple.hpp>
#include <asio/io_context.hpp>
#include <asio/strand.hpp>
#include <asio/use_awaitable.hpp>

#include <cstdlib>
#include <iostream>
#include <string>
#include <thread>
#include <vector>

using asio::use_awaitable;

asio::awaitable<void> echo(bellows::channel ch) {
  std::vector<std::byte> buffer(8 << 20);
  for (;;) {
    auto [ec, n] = co_await ch.async_receive(asio::buffer(buffer), asio::experimental::as_tuple(use_awaitable));
    if (ec == bellows::error::end_of_stream) break;
    if (ec) {
      std::cerr << "receive: " << ec.message() << "\n";
      co_return;
    }
    co_await ch.async_send(asio::buffer(buffer.data(), n), use_awaitable);
  }
  co_await ch.async_close(use_awaitable);
}

asio::awaitable<void> serve(bellows::acceptor& acceptor, asio::io_context& io) {
  for (;;) {
    bellows::channel ch = co_await acceptor.async_accept(asio::make_strand(io), use_awaitable);
    // The executor goes into a variable first: g++ 12 frees the channel twice when
    // co_spawn(co_await asio::this_coro::executor, echo(std::move(ch)), ...) is one expression.
    const auto strand = ch.get_executor();
    asio::co_spawn(strand, echo(std::move(ch)), asio::detached);
  }
}

int main(int argc, char** argv) {
  constexpr const char* usage =
      "usage: bellows_echo_server [URI [THREADS]]\n"
      "  URI      where to listen: shm://NAME (default shm://echo) or rdma://HOST:PORT\n"
      "  THREADS  threads running the io_context, each channel on its own strand (default 1)\n";
  const std::string first = argc > 1 ? argv[1] : "";
  if (argc == 2 && (first == "--help" || first == "-h")) {
    std::cout << usage;
    return 0;
  }
  const std::string uri = argc > 1 ? first : "shm://echo";
  char* end = argv[argc > 2 ? 2 : 0];
  const long threads = argc > 2 ? std::strtol(argv[2], &end, 10) : 1;
  if (argc > 3 || first.starts_with("-") || (argc > 2 && (end == argv[2] || *end != '\0')) || threads < 1 ||
      threads > 1024) {
    std::cerr << "bellows_echo_server: bad arguments\n" << usage;
    return 2;
  }
  asio::io_context io(static_cast<int>(threads));
  bellows::acceptor acceptor(asio::make_strand(io), uri);
  std::cout << "echoing on " << uri << " with " << threads << " thread(s)" << std::endl;
  asio::co_spawn(acceptor.get_executor(), serve(acceptor, io), asio::detached);
  std::vector<std::thread> pool;
  for (int i = 1; i < threads; ++i) pool.emplace_back([&io] { io.run(); });
  io.run();
  for (auto& t : pool) t.join();
}
