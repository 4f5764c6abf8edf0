#pragma once
// The doorbell ring in the header of a link's arena: the peer pushes ids of channels that have
// something to look at; the owner's reactor pops them, so a poll costs the channels with
// activity, not the channels open. One producer (the peer's reactor) and one consumer. A full
// ring sets an overflow word instead, and the consumer then looks at every channel of the link.
// The owner announces that it is about to sleep; a producer that sees this wakes it through the
// eventfd the owner sent at link setup.
//
// Each entry carries its own position beside the channel id, so the owner polls the one entry it
// expects next: a doorbell costs the owner one cache line from the producer's core, not a count
// and then an entry. Both sides keep their counts in private memory; the owner publishes how far
// it has consumed only so that the producer can tell a full ring.

#include <cstddef>
#include <cstdint>

namespace bellows::shm::doorbell {

inline constexpr std::size_t consumed_offset = 64;   // u64, written by the owner
inline constexpr std::size_t sleeping_offset = 128;  // u64, set by the owner, cleared by whoever wakes it
inline constexpr std::size_t overflow_offset = 192;  // u64, set by the peer, cleared by the owner
inline constexpr std::size_t entries_offset = 4096;
inline constexpr std::uint64_t capacity = 4096;  // u64 entries
inline constexpr std::size_t bytes = entries_offset + capacity * 8;

/// The low 32 bits of `position + 1` above the id: never the zero of fresh memory, and different
/// from what the same slot held one lap earlier.
inline constexpr std::uint64_t entry(std::uint64_t position, std::uint32_t channel_id) {
  return (std::uint64_t{static_cast<std::uint32_t>(position + 1)} << 32) | channel_id;
}

inline std::uint64_t* word(std::byte* header, std::size_t offset) {
  return reinterpret_cast<std::uint64_t*>(header + offset);
}
inline std::uint64_t* slot(std::byte* header, std::uint64_t position) {
  return reinterpret_cast<std::uint64_t*>(header + entries_offset) + position % capacity;
}

/// What the producer remembers between pushes.
struct producer {
  std::uint64_t produced = 0;
  /// The owner's consumed count as last read: the owner writes that line on every drain, so it
  /// is read again only when the ring looks full.
  std::uint64_t consumed_seen = 0;
};

/// Producer side, run on the peer's header. Returns true when the owner was asleep and must be
/// woken (the caller writes its eventfd).
inline bool push(std::byte* header, std::uint32_t channel_id, producer& p) {
  if (p.produced - p.consumed_seen >= capacity)
    p.consumed_seen = __atomic_load_n(word(header, consumed_offset), __ATOMIC_ACQUIRE);
  if (p.produced - p.consumed_seen >= capacity) {
    __atomic_store_n(word(header, overflow_offset), 1, __ATOMIC_RELEASE);
  } else {
    __atomic_store_n(slot(header, p.produced), entry(p.produced, channel_id), __ATOMIC_RELEASE);
    ++p.produced;
  }
  // Pairs with the owner's fence between announcing sleep and its last look at the ring: at
  // least one of the two sees the other's store, so a doorbell never goes unheard.
  __atomic_thread_fence(__ATOMIC_SEQ_CST);
  auto* sleeping = word(header, sleeping_offset);
  return __atomic_load_n(sleeping, __ATOMIC_RELAXED) != 0 && __atomic_exchange_n(sleeping, 0, __ATOMIC_ACQ_REL) != 0;
}

/// Consumer side, run on the owner's header: calls `fn(id)` for each id pushed since the last
/// drain and `on_overflow()` when ids were lost. The peer is not trusted: ids are validated by
/// the caller, and one drain takes at most a lap, so a peer writing entries without end cannot
/// hold the reactor here.
template <class Fn, class Overflow>
std::uint64_t drain(std::byte* header, std::uint64_t& consumed, Fn&& fn, Overflow&& on_overflow) {
  std::uint64_t popped = 0;
  for (; popped < capacity; ++popped) {
    const std::uint64_t e = __atomic_load_n(slot(header, consumed), __ATOMIC_ACQUIRE);
    if (e >> 32 != entry(consumed, 0) >> 32) break;
    ++consumed;
    fn(static_cast<std::uint32_t>(e));
  }
  if (popped != 0) __atomic_store_n(word(header, consumed_offset), consumed, __ATOMIC_RELEASE);
  auto* overflow = word(header, overflow_offset);
  if (__atomic_load_n(overflow, __ATOMIC_RELAXED) != 0 && __atomic_exchange_n(overflow, 0, __ATOMIC_ACQ_REL) != 0) {
    on_overflow();
    ++popped;
  }
  return popped;
}

inline bool pending(std::byte* header, std::uint64_t consumed) {
  return __atomic_load_n(slot(header, consumed), __ATOMIC_ACQUIRE) >> 32 == entry(consumed, 0) >> 32 ||
         __atomic_load_n(word(header, overflow_offset), __ATOMIC_ACQUIRE) != 0;
}

/// Owner: announce sleep, then look once more; false means a doorbell raced in, stay awake.
inline bool prepare_to_sleep(std::byte* header, std::uint64_t consumed) {
  __atomic_store_n(word(header, sleeping_offset), 1, __ATOMIC_RELAXED);
  __atomic_thread_fence(__ATOMIC_SEQ_CST);
  if (!pending(header, consumed)) return true;
  __atomic_store_n(word(header, sleeping_offset), 0, __ATOMIC_RELAXED);
  return false;
}

/// Called on every poll round: storing only when the flag is set keeps the line the producer reads
/// on every push from bouncing between the cores.
inline void woke_up(std::byte* header) {
  auto* sleeping = word(header, sleeping_offset);
  if (__atomic_load_n(sleeping, __ATOMIC_RELAXED) != 0) __atomic_store_n(sleeping, 0, __ATOMIC_RELAXED);
}

}  // namespace bellows::shm::doorbell
