#pragma once
// CRC-32C (Castagnoli), the checksum the file-transfer example sends with each file, computed
// by ISA-L (libisal), which interleaves several streams and combines them, so checking 1 GiB
// costs little next to moving it.

#include <cstddef>
#include <cstdint>

namespace file_transfer {

/// Extends `crc` (start with 0) over `size` bytes.
std::uint32_t crc32c(std::uint32_t crc, const void* data, std::size_t size) noexcept;

}  // namespace file_transfer
