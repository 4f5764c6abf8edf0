#include "crc32c.hpp"

#include <array>
#include <cstring>

#if defined(__x86_64__)
#include <nmmintrin.h>
#endif

namespace file_transfer {

namespace {

constexpr std::uint32_t reflected_polynomial = 0x82F63B78u;

constexpr std::array<std::uint32_t, 256> make_table() {
  std::array<std::uint32_t, 256> table{};
  for (std::uint32_t i = 0; i < 256; ++i) {
    std::uint32_t c = i;
    for (int bit = 0; bit < 8; ++bit) c = (c & 1) ? (c >> 1) ^ reflected_polynomial : c >> 1;
    table[i] = c;
  }
  return table;
}

constexpr auto table = make_table();

std::uint32_t portable(std::uint32_t state, const unsigned char* p, std::size_t size) noexcept {
  for (std::size_t i = 0; i < size; ++i) state = table[(state ^ p[i]) & 0xFF] ^ (state >> 8);
  return state;
}

#if defined(__x86_64__)
__attribute__((target("sse4.2"))) std::uint32_t hardware(std::uint32_t state, const unsigned char* p,
                                                         std::size_t size) noexcept {
  std::uint64_t wide = state;
  for (; size >= 8; size -= 8, p += 8) {
    std::uint64_t word;
    std::memcpy(&word, p, sizeof word);
    wide = _mm_crc32_u64(wide, word);
  }
  auto narrow = static_cast<std::uint32_t>(wide);
  for (; size > 0; --size, ++p) narrow = _mm_crc32_u8(narrow, *p);
  return narrow;
}
#endif

}  // namespace

std::uint32_t crc32c(std::uint32_t crc, const void* data, std::size_t size) noexcept {
  const auto* p = static_cast<const unsigned char*>(data);
  std::uint32_t state = ~crc;
#if defined(__x86_64__)
  static const bool has_sse42 = __builtin_cpu_supports("sse4.2");
  state = has_sse42 ? hardware(state, p, size) : portable(state, p, size);
#else
  state = portable(state, p, size);
#endif
  return ~state;
}

}  // namespace file_transfer
