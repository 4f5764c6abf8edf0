#include "crc32c.hpp"

#include <isa-l/crc.h>

#include <algorithm>
#include <climits>

namespace file_transfer {

std::uint32_t crc32c(std::uint32_t crc, const void* data, std::size_t size) noexcept {
  // ISA-L's iSCSI CRC is CRC-32C without the final inversion; it folds several streams at
  // once with carry-less multiplication where the CPU has it. Its length is an int.
  auto* p = static_cast<unsigned char*>(const_cast<void*>(data));
  std::uint32_t state = ~crc;
  while (size > 0) {
    const auto piece = std::min<std::size_t>(size, INT_MAX);
    state = crc32_iscsi(p, static_cast<int>(piece), state);
    p += piece;
    size -= piece;
  }
  return ~state;
}

}  // namespace file_transfer
