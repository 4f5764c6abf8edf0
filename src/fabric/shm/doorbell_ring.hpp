#pragma once
// The doorbell ring in the header of a link's arena: the peer pushes ids of channels that have
// something to look at; the owner's reactor pops them, so a poll costs the channels with
// activity, not the channels open. One producer (the peer's reactor) and one consumer. A full
// ring sets an overflow word instead, and the consumer then looks at every channel of the link.
// The owner announces that it is about to sleep; a producer that sees this wakes it through the
// eventfd the owner sent at link setup.

#include "proto/shared_access.hpp"

#include <cstddef>
#include <cstdint>

namespace bellows::shm::doorbell {

inline constexpr std::size_t produced_offset = 0;    // u64, written by the peer
inline constexpr std::size_t consumed_offset = 64;   // u64, written by the owner
inline constexpr std::size_t sleeping_offset = 128;  // u64, set by the owner, cleared by whoever wakes it
inline constexpr std::size_t overflow_offset = 192;  // u64, set by the peer, cleared by the owner
inline constexpr std::size_t entries_offset = 4096;
inline constexpr std::uint64_t capacity = 8192;  // u32 entries
inline constexpr std::size_t bytes = entries_offset + capacity * 4;

inline std::uint64_t* word(std::byte* header, std::size_t offset) {
  return reinterpret_cast<std::uint64_t*>(header + offset);
}

/// Producer side, run on the peer's header. Returns true when the owner was asleep and must be
/// woken (the caller writes its eventfd).
inline bool push(std::byte* header, std::uint32_t channel_id) {
  auto* produced = word(header, produced_offset);
  const std::uint64_t head = __atomic_load_n(produced, __ATOMIC_RELAXED);
  const std::uint64_t tail = __atomic_load_n(word(header, consumed_offset), __ATOMIC_ACQUIRE);
  if (head - tail >= capacity) {
    __atomic_store_n(word(header, overflow_offset), 1, __ATOMIC_RELEASE);
  } else {
    __atomic_store_n(reinterpret_cast<std::uint32_t*>(header + entries_offset) + head % capacity, channel_id,
                     __ATOMIC_RELAXED);
    __atomic_store_n(produced, head + 1, __ATOMIC_RELEASE);
  }
  // Pairs with the owner's fence between announcing sleep and its last look at the ring: at
  // least one of the two sees the other's store, so a doorbell never goes unheard.
  __atomic_thread_fence(__ATOMIC_SEQ_CST);
  auto* sleeping = word(header, sleeping_offset);
  return __atomic_load_n(sleeping, __ATOMIC_RELAXED) != 0 && __atomic_exchange_n(sleeping, 0, __ATOMIC_ACQ_REL) != 0;
}

/// Consumer side, run on the owner's header: calls `fn(id)` for each id pushed since the last
/// drain and `on_overflow()` when ids were lost. The peer is not trusted: a producer count that
/// runs more than a lap ahead counts as an overflow, and ids are validated by the caller.
template <class Fn, class Overflow>
std::uint64_t drain(std::byte* header, Fn&& fn, Overflow&& on_overflow) {
  auto* consumed = word(header, consumed_offset);
  const std::uint64_t head = __atomic_load_n(word(header, produced_offset), __ATOMIC_ACQUIRE);
  std::uint64_t tail = __atomic_load_n(consumed, __ATOMIC_RELAXED);
  std::uint64_t popped = 0;
  if (head - tail > capacity) {
    on_overflow();
    tail = head;
  }
  const auto* entries = reinterpret_cast<const std::uint32_t*>(header + entries_offset);
  for (; tail != head; ++tail, ++popped) fn(__atomic_load_n(entries + tail % capacity, __ATOMIC_RELAXED));
  if (popped != 0) __atomic_store_n(consumed, tail, __ATOMIC_RELEASE);
  auto* overflow = word(header, overflow_offset);
  if (__atomic_load_n(overflow, __ATOMIC_RELAXED) != 0 && __atomic_exchange_n(overflow, 0, __ATOMIC_ACQ_REL) != 0) {
    on_overflow();
    ++popped;
  }
  return popped;
}

inline bool pending(std::byte* header) {
  return __atomic_load_n(word(header, produced_offset), __ATOMIC_ACQUIRE) !=
             __atomic_load_n(word(header, consumed_offset), __ATOMIC_RELAXED) ||
         __atomic_load_n(word(header, overflow_offset), __ATOMIC_ACQUIRE) != 0;
}

/// Owner: announce sleep, then look once more; false means a doorbell raced in, stay awake.
inline bool prepare_to_sleep(std::byte* header) {
  __atomic_store_n(word(header, sleeping_offset), 1, __ATOMIC_RELAXED);
  __atomic_thread_fence(__ATOMIC_SEQ_CST);
  if (!pending(header)) return true;
  __atomic_store_n(word(header, sleeping_offset), 0, __ATOMIC_RELAXED);
  return false;
}

inline void woke_up(std::byte* header) { __atomic_store_n(word(header, sleeping_offset), 0, __ATOMIC_RELAXED); }

}  // namespace bellows::shm::doorbell
