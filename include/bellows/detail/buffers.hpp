#pragma once
// Asio buffer sequences turned into the span lists the library works on. A single buffer, by
// far the common case, needs no allocation.

#include <bellows/detail/byte_ranges.hpp>

#include <asio/buffer.hpp>

#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

namespace bellows::detail {

template <class Byte, class BufferSequence>
byte_ranges<Byte> ranges_of(const BufferSequence& buffers) {
  byte_ranges<Byte> out;
  auto begin = asio::buffer_sequence_begin(buffers);
  auto end = asio::buffer_sequence_end(buffers);
  std::size_t count = 0;
  for (auto it = begin; it != end; ++it) ++count;
  out.is_single = count <= 1;
  for (auto it = begin; it != end; ++it) {
    auto b = *it;
    std::span<Byte> s(static_cast<Byte*>(b.data()), b.size());
    out.length += s.size();
    if (out.is_single) {
      out.single = s;
    } else {
      out.many.push_back(s);
    }
  }
  return out;
}

template <class ConstBufferSequence>
gather gather_of(const ConstBufferSequence& buffers) {
  return ranges_of<const std::byte>(buffers);
}

inline gather gather_of_file(int descriptor, std::uint64_t offset, std::uint64_t length) {
  gather out;
  out.length = length;
  out.file = {descriptor, offset};
  return out;
}

template <class MutableBufferSequence>
scatter scatter_of(const MutableBufferSequence& buffers) {
  return ranges_of<std::byte>(buffers);
}

}  // namespace bellows::detail
