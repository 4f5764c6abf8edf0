#pragma once
// Deterministic test payloads.

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <random>
#include <vector>

namespace bellows::test {

inline std::vector<std::byte> random_bytes(std::mt19937_64& rng, std::size_t size) {
  std::vector<std::byte> out(size);
  std::size_t i = 0;
  for (; i + 8 <= size; i += 8) {
    const std::uint64_t word = rng();
    for (int b = 0; b < 8; ++b) out[i + b] = static_cast<std::byte>(word >> (8 * b));
  }
  for (; i < size; ++i) out[i] = static_cast<std::byte>(rng());
  return out;
}

}  // namespace bellows::test

namespace bellows::test {

inline std::vector<std::byte> random_bytes(std::size_t size, std::uint64_t seed) {
  std::mt19937_64 rng(seed);
  return random_bytes(rng, size);
}

}  // namespace bellows::test

namespace bellows::test {

/// A stamped message starts with its channel's id, its sequence number and its size, and the
/// rest is derived from the first two: a receiver proves that a message is intact, and which
/// one it is, from the bytes alone.
constexpr std::size_t stamp_bytes = 24;

inline std::uint64_t mix(std::uint64_t x) {
  x += 0x9e3779b97f4a7c15;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9;
  x = (x ^ (x >> 27)) * 0x94d049bb133111eb;
  return x ^ (x >> 31);
}

inline void fill_stamped(std::vector<std::byte>& out, std::uint64_t uid, std::uint64_t seq, std::size_t size) {
  out.resize(size);
  const std::uint64_t head[3] = {uid, seq, size};
  std::memcpy(out.data(), head, stamp_bytes);
  std::uint64_t state = mix(uid * 1'000'003 + seq);
  for (std::size_t i = stamp_bytes; i < size; i += 8) {
    state = mix(state);
    std::memcpy(out.data() + i, &state, std::min<std::size_t>(8, size - i));
  }
}

inline bool is_stamped(const std::byte* data, std::uint64_t uid, std::uint64_t seq, std::size_t size) {
  const std::uint64_t head[3] = {uid, seq, size};
  if (size < stamp_bytes || std::memcmp(data, head, stamp_bytes) != 0) return false;
  std::uint64_t state = mix(uid * 1'000'003 + seq);
  for (std::size_t i = stamp_bytes; i < size; i += 8) {
    state = mix(state);
    if (std::memcmp(data + i, &state, std::min<std::size_t>(8, size - i)) != 0) return false;
  }
  return true;
}

}  // namespace bellows::test
