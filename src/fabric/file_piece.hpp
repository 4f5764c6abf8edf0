#pragma once
// Message bytes that come from a file (channel::async_send_file) rather than from memory.

#include <cstddef>
#include <cstdint>
#include <system_error>

namespace bellows::fabric {

/// `length` bytes of an open file, from `offset` on.
struct file_piece {
  int descriptor = -1;
  std::uint64_t offset = 0;
  std::uint64_t length = 0;
};

/// Whether `piece` can be sent: the descriptor's errno from fstat, error::invalid_argument for
/// anything but a regular file or block device or a range past a regular file's end. Also
/// asks the kernel to read the range ahead.
std::error_code check_file_piece(file_piece piece) noexcept;

/// Reads all of `piece` into `into` with pread; error::file_truncated if the file ends first.
std::error_code read_file_piece(file_piece piece, std::byte* into) noexcept;

}  // namespace bellows::fabric
