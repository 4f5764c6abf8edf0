#include "proto/fetch_guard.hpp"

#include <atomic>

namespace bellows::proto::fetch_guard {
namespace {

std::atomic<std::uint64_t> word{1};

}  // namespace

snapshot current() noexcept { return {reinterpret_cast<std::uint64_t>(&word), word.load(std::memory_order_acquire)}; }

void withdraw() noexcept {
  word.fetch_add(1, std::memory_order_seq_cst);
  // The application's next writes into the buffer must not become visible before the bump.
  std::atomic_thread_fence(std::memory_order_seq_cst);
}

}  // namespace bellows::proto::fetch_guard
