#pragma once
// What the two sides of a file transfer say to each other, one bellows message each:
//   sender   -> offer    {magic, file size, chunk size}
//   receiver -> answer   "ok", or the reason it cannot take the file
//   sender   -> the file, in chunks of at most `chunk` bytes, in order
//   sender   -> trailer  {magic, CRC-32C of the whole file, file size}
//   receiver -> answer   "ok" once the checksum matched and the file has its final name
// Both ends run on the same architecture (shm), or agree on little-endian (x86, arm64 over rdma).

#include <cstdint>
#include <string>

namespace file_transfer {

struct offer {
  char magic[8] = {'b', 'f', 'x', 'o', 'f', 'f', 'e', 'r'};
  std::uint64_t file_size = 0;
  std::uint64_t chunk = 0;
};

struct trailer {
  char magic[8] = {'b', 'f', 'x', 't', 'r', 'a', 'i', 'l'};
  std::uint64_t file_size = 0;
  std::uint32_t crc32c = 0;
  std::uint32_t reserved = 0;
};

constexpr std::uint64_t default_chunk = 256 * 1024;  // four in flight in the default 1 MiB ring
constexpr std::uint64_t largest_chunk = 64u << 20;
constexpr const char* accepted = "ok";

/// Sends `source` over a channel to `uri`. Throws std::runtime_error with the reason.
void send_file(const std::string& uri, const std::string& source, std::uint64_t chunk);
/// Listens on `uri`, takes one file, writes it to `destination`. Throws with the reason; a
/// partial file never remains under the destination's name.
void receive_file(const std::string& uri, const std::string& destination);

}  // namespace file_transfer
