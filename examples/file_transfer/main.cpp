// Sends one file over a bellows channel and writes it on the other side straight from the
// receiver's ring, with a CRC-32C checked end to end.
//   bellows_file_transfer receive URI DESTINATION     (start first: it listens)
//   bellows_file_transfer send URI SOURCE [--chunk BYTES]
// URI is shm://NAME, tcp://HOST:PORT or rdma://HOST:PORT. Exit status 0 only when the
// receiver verified the checksum and the file has its final name; on any failure both sides
// say why on stderr and the receiver removes its partial DESTINATION.part.

#include "protocol.hpp"

#include <cstdio>
#include <cstring>
#include <string>

namespace {

constexpr const char* usage_text =
    "usage: bellows_file_transfer receive URI DESTINATION\n"
    "       bellows_file_transfer send URI SOURCE [--chunk BYTES]\n"
    "  URI          shm://NAME or rdma://HOST:PORT; the receiver listens on it, so start it first\n"
    "  DESTINATION  written as DESTINATION.part, renamed once the checksum is verified\n"
    "  BYTES        the size of each chunk in flight: 1 B to 64 MiB, default 256 KiB\n";

static_assert(file_transfer::default_chunk == 256 * 1024 && file_transfer::largest_chunk == 64u << 20,
              "the usage text names these");

}  // namespace

int main(int argc, char** argv) {
  if (argc == 2 && (std::strcmp(argv[1], "--help") == 0 || std::strcmp(argv[1], "-h") == 0)) {
    std::fputs(usage_text, stdout);
    return 0;
  }
  const auto usage = [] {
    std::fprintf(stderr, "bellows_file_transfer: bad arguments\n%s", usage_text);
    return 2;
  };
  if (argc < 4) return usage();
  const std::string role = argv[1], uri = argv[2], path = argv[3];
  std::uint64_t chunk = file_transfer::default_chunk;
  if (argc == 6 && std::strcmp(argv[4], "--chunk") == 0) {
    chunk = std::strtoull(argv[5], nullptr, 10);
    if (chunk == 0 || chunk > file_transfer::largest_chunk) {
      std::fprintf(stderr, "bellows_file_transfer: --chunk takes 1 .. %llu bytes\n%s",
                   static_cast<unsigned long long>(file_transfer::largest_chunk), usage_text);
      return 2;
    }
  } else if (argc != 4) {
    return usage();
  }
  try {
    if (role == "send")
      file_transfer::send_file(uri, path, chunk);
    else if (role == "receive")
      file_transfer::receive_file(uri, path);
    else
      return usage();
  } catch (const std::exception& e) {
    std::fprintf(stderr, "file_transfer: %s\n", e.what());
    return 1;
  }
  return 0;
}
