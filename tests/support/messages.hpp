#pragma once
// Deterministic test payloads.

#include <cstddef>
#include <cstdint>
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
