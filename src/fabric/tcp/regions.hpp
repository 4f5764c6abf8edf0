#pragma once
// The memory a tcp link lets its peer write: zeroed heap blocks, counted against the context's
// budget. Nothing is registered with a device: the link itself places what arrives, after
// checking that every byte of a write lies in one live region under this link's key. Region i
// sits at address (i + 1) << 40 plus the offset of its memory within a page: an address names its
// region without a search, and tells the writer where in a page its bytes will land, which the
// writer needs to keep the kernel's copies fast (fabric/tcp/copy_alignment.hpp). A lent region
// is an application's receive buffer the peer may write one message into; its handles come from
// a range of their own, used in turn, so a write that arrives after the buffer was taken back is
// known for one and dropped rather than landing in memory lent later. (The stream is ordered: a
// stale write comes before anything the peer writes after a later grant, long before a handle
// comes round again.)

#include "fabric/memory_budget.hpp"
#include "fabric/provider.hpp"
#include "proto/outcome.hpp"

#include <cstddef>
#include <cstdint>
#include <deque>
#include <map>
#include <span>
#include <vector>

namespace bellows::tcp {

class regions {
 public:
  static constexpr int address_shift = 40;
  /// The longest region: its addresses, page offset included, stay below the next region's.
  static constexpr std::size_t max_length = (std::size_t{1} << address_shift) - 4096;

  regions(fabric::memory_budget& budget, std::uint64_t key) : budget_(&budget), key_(key) {}
  ~regions();
  regions(const regions&) = delete;
  regions& operator=(const regions&) = delete;

  /// `length` zeroed bytes; error::budget_exhausted past the budget.
  proto::outcome<fabric::region> allocate(std::size_t length);
  void release(std::uint64_t handle);
  /// The peer may write into `memory` until release(handle).
  proto::outcome<fabric::region> lend(std::span<std::byte> memory);
  /// Where the `length` bytes at `address` are, if they all lie in one live region and the key
  /// is ours; null otherwise.
  std::byte* find(std::uint64_t key, std::uint64_t address, std::uint64_t length) const;
  /// A live loan's memory; empty for any other handle.
  std::span<std::byte> lent_memory(std::uint64_t handle) const;
  /// Whether `address` lies in a lent region taken back since: a write there is dropped.
  bool taken_back(std::uint64_t key, std::uint64_t address) const;
  std::size_t registered_bytes() const noexcept { return registered_; }
  /// The budget goes away before this memory does (the reactor shuts down first).
  void leave_budget() noexcept;

 private:
  struct block {
    std::byte* data = nullptr;
    std::size_t length = 0;
    void* allocated = nullptr;  ///< what to free: rings only, never a loan
  };
  static constexpr std::uint64_t first_lent_handle = std::uint64_t{1} << 23;
  static constexpr std::uint64_t lent_handle_end = std::uint64_t{1} << (64 - address_shift);
  /// Loans taken back are remembered this many at most (writes still in flight to them).
  static constexpr std::size_t remembered_loans = 1024;

  /// A loan's memory, null once taken back; none for a handle never lent or forgotten.
  const block* loan_of(std::uint64_t handle) const;

  fabric::memory_budget* budget_;
  std::uint64_t key_;
  std::vector<block> blocks_;  // index = handle - 1
  std::vector<std::uint64_t> free_handles_;
  std::map<std::uint64_t, block> loans_;
  std::deque<std::uint64_t> taken_back_;  // oldest first
  std::uint64_t next_lent_handle_ = first_lent_handle;
  std::size_t registered_ = 0;
};

}  // namespace bellows::tcp
