#pragma once
// Runs two operations at once (a disk transfer and a channel transfer) and waits for both.

#include <asio/awaitable.hpp>
#include <asio/experimental/awaitable_operators.hpp>
#include <asio/multiple_exceptions.hpp>

#include <exception>
#include <utility>

namespace file_transfer {

/// `first && second`, except that when one fails and the other then fails too (cancelled by
/// the first failure), the first failure is the one thrown, not asio::multiple_exceptions.
template <class T>
asio::awaitable<T> overlapped(asio::awaitable<void> first, asio::awaitable<T> second) {
  using namespace asio::experimental::awaitable_operators;
  try {
    co_return co_await (std::move(first) && std::move(second));
  } catch (const asio::multiple_exceptions& e) {
    std::rethrow_exception(e.first_exception());
  }
}

}  // namespace file_transfer
