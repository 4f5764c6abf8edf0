#pragma once
// Loads and stores on memory the peer writes concurrently (shared mappings, RDMA targets).
// Flags are read with acquire so that everything the peer placed before them is visible;
// plain fields are read with relaxed atomics so a lying peer can at worst give us wrong
// numbers, never a torn read the compiler assumed impossible.

#include <cstddef>
#include <cstdint>
#include <cstring>

namespace bellows::proto {

template <class T>
inline T load_acquire(const std::byte* at) noexcept {
  return __atomic_load_n(reinterpret_cast<const T*>(at), __ATOMIC_ACQUIRE);
}

template <class T>
inline T load_relaxed(const std::byte* at) noexcept {
  return __atomic_load_n(reinterpret_cast<const T*>(at), __ATOMIC_RELAXED);
}

template <class T>
inline void store_relaxed(std::byte* at, T value) noexcept {
  __atomic_store_n(reinterpret_cast<T*>(at), value, __ATOMIC_RELAXED);
}

template <class T>
inline void store_release(std::byte* at, T value) noexcept {
  __atomic_store_n(reinterpret_cast<T*>(at), value, __ATOMIC_RELEASE);
}

template <class T>
inline void put(std::byte* at, T value) noexcept {
  std::memcpy(at, &value, sizeof value);
}

template <class T>
inline T get(const std::byte* at) noexcept {
  T value;
  std::memcpy(&value, at, sizeof value);
  return value;
}

}  // namespace bellows::proto
