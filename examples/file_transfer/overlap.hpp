#pragma once
// Runs two operations at once (a disk transfer and a channel transfer) and waits for both.

#include <asio/awaitable.hpp>
#include <asio/experimental/awaitable_operators.hpp>

#include <exception>
#include <memory>
#include <utility>

namespace file_transfer {

namespace detail {

/// Awaits `operation`, noting its failure in `first` unless another failure came before.
template <class T>
asio::awaitable<T> noting_failure(asio::awaitable<T> operation, std::shared_ptr<std::exception_ptr> first) {
  try {
    co_return co_await std::move(operation);
  } catch (...) {
    if (!*first) *first = std::current_exception();
    throw;
  }
}

}  // namespace detail

/// `first && second`, but when both fail it throws the failure that happened first. The
/// other is then only its consequence (cancelled by it), while Asio's && would report the
/// first operand's, or multiple_exceptions.
template <class T>
asio::awaitable<T> overlapped(asio::awaitable<void> first, asio::awaitable<T> second) {
  using namespace asio::experimental::awaitable_operators;
  auto earliest = std::make_shared<std::exception_ptr>();
  try {
    co_return co_await (detail::noting_failure(std::move(first), earliest) &&
                        detail::noting_failure(std::move(second), earliest));
  } catch (...) {
    if (*earliest) std::rethrow_exception(*earliest);
    throw;
  }
}

}  // namespace file_transfer
