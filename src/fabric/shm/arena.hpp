#pragma once
// One side's shared memory for a shm link: a sparse memfd, sealed so the peer cannot shrink or
// grow it under us, mapped in both processes. The first `header_bytes` hold the link header
// (the doorbell ring); rings and control blocks are carved from the rest in power-of-two size
// classes. Released blocks of a page or more stay resident and zeroed up to the budget's warm
// bound, so the next ring of that size costs no page faults; past it, and under budget
// pressure, they are punched out, so released memory really returns to the system.

#include "fabric/memory_budget.hpp"
#include "fabric/provider.hpp"
#include "proto/outcome.hpp"

#include <array>
#include <cstddef>
#include <cstdint>
#include <utility>
#include <vector>

namespace bellows::shm {

using fabric::memory_budget;

/// A mapping of an arena, ours or the peer's; owns the mapping and the descriptor.
class mapping {
 public:
  mapping() = default;
  mapping(int fd, std::byte* base, std::size_t size) noexcept : fd_(fd), base_(base), size_(size) {}
  mapping(mapping&& other) noexcept;
  mapping& operator=(mapping&& other) noexcept;
  ~mapping();

  /// Maps a descriptor the peer sent after checking that it is a memfd of at least `size`
  /// bytes sealed against shrinking; takes ownership of `fd` either way.
  static proto::outcome<mapping> adopt(int fd, std::size_t size);

  /// Gives up ownership of the descriptor without closing it.
  int release() noexcept { return std::exchange(fd_, -1); }
  int fd() const noexcept { return fd_; }
  std::byte* base() const noexcept { return base_; }
  std::size_t size() const noexcept { return size_; }

 private:
  int fd_ = -1;
  std::byte* base_ = nullptr;
  std::size_t size_ = 0;
};

class arena {
 public:
  static constexpr std::size_t header_bytes = 64 * 1024;
  static constexpr std::size_t page_bytes = 4096;

  static proto::outcome<arena> create(std::size_t size, memory_budget& budget);
  arena(arena&& other) noexcept;
  arena& operator=(arena&&) = delete;
  /// Gives whatever is still allocated back to the budget: a link dropped while some of its
  /// channels wait for the peer's detach takes their memory with it.
  ~arena();
  /// Stops accounting to the budget, which is about to be destroyed.
  void leave_budget() noexcept { budget_ = nullptr; }

  /// Zeroed memory of at least `length` bytes; fails with budget_exhausted past the budget or
  /// when the arena is full.
  proto::outcome<fabric::region> allocate(std::size_t length);
  void release(std::uint64_t handle);
  /// Gives the warm blocks' pages back to the system (the budget is short).
  void trim();

  const mapping& memory() const noexcept { return memory_; }
  std::byte* header() const noexcept { return memory_.base(); }
  std::size_t registered_bytes() const noexcept { return registered_; }

 private:
  arena(mapping memory, memory_budget& budget) : memory_(std::move(memory)), budget_(&budget) {}
  bool punch(std::size_t offset, std::size_t bytes);

  static constexpr unsigned min_class = 6;  // 64 B
  static constexpr unsigned class_count = 48;

  mapping memory_;
  memory_budget* budget_;  ///< null once moved from
  std::size_t next_ = header_bytes;
  std::size_t registered_ = 0;
  // Region handles encode offset and size class: offset | class, since offsets are 64-aligned.
  std::array<std::vector<std::size_t>, class_count> free_;  ///< pages punched out
  std::array<std::vector<std::size_t>, class_count> warm_;  ///< pages present, zeroed
  std::size_t warm_bytes_ = 0;
};

}  // namespace bellows::shm
