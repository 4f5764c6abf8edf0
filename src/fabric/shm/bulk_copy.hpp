#pragma once
// Copying a large payload into the peer's ring. The peer's core read those lines on the ring's
// last lap, so ordinary stores must first take each line back from its cache; for large
// payloads that ownership traffic, not the copy, limits the rate (perf: 72% of a 64 KiB
// sender's time in memmove at about 10 GB/s). Streaming stores skip it. Below the threshold the
// lines are likely still warm in the writer's own cache, and the reader is better served by
// finding them in a cache than in memory.

#include <cstddef>
#include <cstdint>
#include <cstring>

#if defined(__x86_64__)
#include <immintrin.h>
#endif

namespace bellows::shm {

inline constexpr std::size_t streaming_copy_threshold = 32 * 1024;

/// Copies `n` bytes to `out`; every store is visible before any later store (the caller's
/// release of the frame's first word) once this returns.
inline void copy_to_peer(std::byte* out, const std::byte* in, std::size_t n) {
#if defined(__x86_64__)
  if (n >= streaming_copy_threshold) {
    const std::size_t lead = (16 - reinterpret_cast<std::uintptr_t>(out) % 16) % 16;
    std::memcpy(out, in, lead);
    out += lead;
    in += lead;
    n -= lead;
    for (; n >= 64; n -= 64, in += 64, out += 64) {
      const auto* from = reinterpret_cast<const __m128i*>(in);
      auto* to = reinterpret_cast<__m128i*>(out);
      const __m128i a = _mm_loadu_si128(from), b = _mm_loadu_si128(from + 1);
      const __m128i c = _mm_loadu_si128(from + 2), d = _mm_loadu_si128(from + 3);
      _mm_stream_si128(to, a);
      _mm_stream_si128(to + 1, b);
      _mm_stream_si128(to + 2, c);
      _mm_stream_si128(to + 3, d);
    }
    std::memcpy(out, in, n);
    // Streaming stores are weakly ordered; the fence keeps them ahead of the caller's release.
    _mm_sfence();
    return;
  }
#endif
  std::memcpy(out, in, n);
}

}  // namespace bellows::shm
