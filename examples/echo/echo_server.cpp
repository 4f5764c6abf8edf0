// Echoes every message back on every channel opened to shm://NAME, until the peer closes.
//   bellows_echo_server [shm://NAME]

#include <bellows/bellows.hpp>

#include <asio/co_spawn.hpp>
#include <asio/detached.hpp>
#include <asio/experimental/as_tuple.hpp>
#include <asio/io_context.hpp>
#include <asio/use_awaitable.hpp>

#include <iostream>
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

asio::awaitable<void> serve(bellows::acceptor& acceptor) {
  for (;;) {
    bellows::channel ch = co_await acceptor.async_accept(use_awaitable);
    asio::co_spawn(acceptor.get_executor(), echo(std::move(ch)), asio::detached);
  }
}

int main(int argc, char** argv) {
  const std::string uri = argc > 1 ? argv[1] : "shm://echo";
  asio::io_context io;
  bellows::acceptor acceptor(io.get_executor(), uri);
  std::cout << "echoing on " << uri << std::endl;
  asio::co_spawn(io, serve(acceptor), asio::detached);
  io.run();
}
