#pragma once
// A message's bytes as a list of ranges, free of Asio so that the protocol core can own the
// buffers of pending operations. A single range, by far the common case, needs no allocation.

#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

namespace bellows::detail {

template <class Byte>
struct byte_ranges {
  std::span<Byte> single;
  std::vector<std::span<Byte>> many;
  std::uint64_t length = 0;
  bool is_single = true;

  std::span<const std::span<Byte>> parts() const noexcept {
    return is_single ? std::span<const std::span<Byte>>(&single, 1) : std::span<const std::span<Byte>>(many);
  }
};

using gather = byte_ranges<const std::byte>;
using scatter = byte_ranges<std::byte>;

}  // namespace bellows::detail
