#pragma once
// A message's bytes as a list of ranges, free of Asio so that the protocol core can own the
// buffers of pending operations. A single range, by far the common case, needs no allocation.

#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

namespace bellows::detail {

/// A message read from a file as its frames are written (channel::async_send_file).
struct file_range {
  int descriptor = -1;  ///< -1: the bytes are in the ranges, not in a file
  std::uint64_t offset = 0;
};

template <class Byte>
struct byte_ranges {
  std::span<Byte> single;
  std::vector<std::span<Byte>> many;
  std::uint64_t length = 0;
  bool is_single = true;
  file_range file;  ///< a gather's only; its ranges are empty when it names a file

  std::span<const std::span<Byte>> parts() const noexcept {
    return is_single ? std::span<const std::span<Byte>>(&single, 1) : std::span<const std::span<Byte>>(many);
  }
};

using gather = byte_ranges<const std::byte>;
using scatter = byte_ranges<std::byte>;

}  // namespace bellows::detail
