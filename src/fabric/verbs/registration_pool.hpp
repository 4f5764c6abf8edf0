#pragma once
// Registered memory for rings and control blocks, by power-of-two size class. A released block
// keeps its registration and waits on its class's free list, so once traffic has warmed the
// pool no ibv_reg_mr (a system call that pins pages) sits on the path of an enlargement.
// Memory is registered LOCAL_WRITE | MW_BIND and is zeroed before it is handed out. A peer can
// write into it only through a memory window that a queue pair's link binds to itself
// (qp_link::grant): the registration's own key grants no remote access at all, so one peer can
// never write into another's rings. Never relaxed ordering: the receiver polls the tail flag
// and needs in-order placement.

#include "fabric/memory_budget.hpp"
#include "fabric/provider.hpp"

#include <infiniband/verbs.h>

#include <array>
#include <cstddef>
#include <cstdint>
#include <vector>

namespace bellows::verbs {

class registration_pool {
 public:
  static constexpr std::size_t smallest_class = 64;
  static constexpr unsigned class_count = 31;  // 64 B .. 64 GiB

  registration_pool(ibv_pd* pd, fabric::memory_budget& budget) noexcept : pd_(pd), budget_(&budget) {}
  ~registration_pool();
  registration_pool(const registration_pool&) = delete;
  registration_pool& operator=(const registration_pool&) = delete;

  /// A zeroed, registered block of at least `length` bytes. The budget is charged the whole
  /// size class while the block stays registered, in use or cached; cached blocks are trimmed
  /// when it runs short. Fails with budget_exhausted, invalid_argument, or ibv_reg_mr's errno.
  proto::outcome<fabric::region> allocate(std::size_t length);
  /// Returns the block to its class's free list, still registered.
  void release(std::uint64_t handle);
  /// Deregisters and frees every cached block (when the budget is short, or at idle).
  void trim();

  /// The local key of a block, for work requests that read from it.
  std::uint32_t local_key(std::uint64_t handle) const;
  /// The registration a memory window over the block is bound to.
  ibv_mr* memory_region(std::uint64_t handle) const;
  /// How many times ibv_reg_mr was called: it stops growing once the pool is warm.
  std::uint64_t registrations() const noexcept { return registrations_; }
  /// Bytes handed out and bytes cached, still registered; the budget holds their sum.
  std::size_t bytes_in_use() const noexcept { return in_use_; }
  std::size_t bytes_cached() const noexcept { return cached_; }

 private:
  struct block {
    std::byte* data = nullptr;
    ibv_mr* mr = nullptr;
    unsigned size_class = 0;
    bool in_use = false;
  };

  static unsigned class_of(std::size_t length) noexcept;
  static std::size_t class_bytes(unsigned size_class) noexcept { return smallest_class << size_class; }
  fabric::region region_of(std::uint64_t handle, std::size_t length) const;
  void destroy(block& b) noexcept;

  ibv_pd* pd_;
  fabric::memory_budget* budget_;
  std::vector<block> blocks_;  // handle = index + 1; destroyed blocks leave a reusable hole
  std::vector<std::uint64_t> holes_;
  std::array<std::vector<std::uint64_t>, class_count> free_;
  std::uint64_t registrations_ = 0;
  std::size_t in_use_ = 0;
  std::size_t cached_ = 0;
};

}  // namespace bellows::verbs
