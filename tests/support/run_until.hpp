#pragma once
// Bounded loops for tests that drive an io_context by hand.

#include <asio/io_context.hpp>

#include <chrono>

namespace bellows::test {

/// Runs `io` until `done()` holds or `limit` passes; true if it held. The context may run out
/// of work and be restarted along the way.
template <class Done>
bool run_until(asio::io_context& io, Done done, std::chrono::milliseconds limit = std::chrono::seconds(2)) {
  const auto deadline = std::chrono::steady_clock::now() + limit;
  while (!done() && std::chrono::steady_clock::now() < deadline) {
    io.restart();
    io.run_for(std::chrono::milliseconds(1));
  }
  return done();
}

}  // namespace bellows::test
