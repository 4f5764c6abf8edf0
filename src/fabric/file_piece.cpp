// Frames whose payload comes from a file (channel::async_send_file): the bytes are read with
// pread at the moment the frame is placed, so they are never staged in the application.

#include "fabric/provider.hpp"

#include <bellows/error.hpp>

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>
#include <cerrno>
#include <climits>

namespace bellows::fabric {

std::error_code check_file_piece(file_piece piece) noexcept {
  struct stat about {};
  if (::fstat(piece.descriptor, &about) != 0) return {errno, std::system_category()};
  if (!S_ISREG(about.st_mode) && !S_ISBLK(about.st_mode)) return make_error_code(error::invalid_argument);
  const auto size = static_cast<std::uint64_t>(about.st_size);
  if (S_ISREG(about.st_mode) && (piece.offset > size || piece.length > size - piece.offset))
    return make_error_code(error::invalid_argument);
  // Advice only: a failure changes nothing but the speed.
  (void)::posix_fadvise(piece.descriptor, static_cast<off_t>(piece.offset), static_cast<off_t>(piece.length),
                        POSIX_FADV_WILLNEED);
  return {};
}

std::error_code read_file_piece(file_piece piece, std::byte* into) noexcept {
  std::uint64_t done = 0;
  // Bounded: every pass either reads at least one byte or returns.
  while (done < piece.length) {
    const auto want = static_cast<std::size_t>(std::min<std::uint64_t>(piece.length - done, SSIZE_MAX));
    const auto got = ::pread(piece.descriptor, into + done, want, static_cast<off_t>(piece.offset + done));
    if (got < 0 && errno == EINTR) continue;
    if (got < 0) return {errno, std::system_category()};
    if (got == 0) return make_error_code(error::file_truncated);
    done += static_cast<std::uint64_t>(got);
  }
  return {};
}

std::error_code provider::write_from_file(remote_address dst, std::span<const std::byte> prefix, file_piece piece) {
  if (file_bounce_.size() < piece.length) file_bounce_.resize(piece.length);
  if (auto ec = read_file_piece(piece, file_bounce_.data())) return ec;
  const std::span<const std::byte> pieces[] = {prefix, {file_bounce_.data(), piece.length}};
  return write(dst, pieces);
}

}  // namespace bellows::fabric
