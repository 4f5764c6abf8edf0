#pragma once
// The memory a tcp link lets its peer write: zeroed heap blocks, counted against the context's
// budget. Nothing is registered with a device: the link itself places what arrives, after
// checking that every byte of a write lies in one live region under this link's key. Region i
// sits at address (i + 1) << 40, so an address names its region without a search.

#include "fabric/memory_budget.hpp"
#include "fabric/provider.hpp"
#include "proto/outcome.hpp"

#include <cstddef>
#include <cstdint>
#include <vector>

namespace bellows::tcp {

class regions {
 public:
  static constexpr int address_shift = 40;

  regions(fabric::memory_budget& budget, std::uint64_t key) : budget_(&budget), key_(key) {}
  ~regions();
  regions(const regions&) = delete;
  regions& operator=(const regions&) = delete;

  /// `length` zeroed bytes; error::budget_exhausted past the budget.
  proto::outcome<fabric::region> allocate(std::size_t length);
  void release(std::uint64_t handle);
  /// Where the `length` bytes at `address` are, if they all lie in one live region and the key
  /// is ours; null otherwise.
  std::byte* find(std::uint64_t key, std::uint64_t address, std::uint64_t length) const;
  std::size_t registered_bytes() const noexcept { return registered_; }
  /// The budget goes away before this memory does (the reactor shuts down first).
  void leave_budget() noexcept;

 private:
  struct block {
    std::byte* data = nullptr;
    std::size_t length = 0;
  };

  fabric::memory_budget* budget_;
  std::uint64_t key_;
  std::vector<block> blocks_;  // index = handle - 1
  std::vector<std::uint64_t> free_handles_;
  std::size_t registered_ = 0;
};

}  // namespace bellows::tcp
