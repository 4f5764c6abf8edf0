// Sends one file over a bellows channel and writes it on the other side, reading and writing
// through io_uring, with a CRC-32C checked end to end.
//   bellows_file_transfer receive URI DESTINATION     (start first: it listens)
//   bellows_file_transfer send URI SOURCE [--chunk BYTES]
// URI is shm://NAME or rdma://HOST:PORT. Exit status 0 only when the receiver verified the
// checksum and the file has its final name; on any failure both sides say why on stderr and
// the receiver removes its partial DESTINATION.part.

#include "protocol.hpp"

#include <cstdio>
#include <cstring>
#include <string>

int main(int argc, char** argv) {
  const auto usage = [&] {
    std::fprintf(stderr, "usage: %s receive URI DESTINATION | send URI SOURCE [--chunk BYTES]\n", argv[0]);
    return 2;
  };
  if (argc < 4) return usage();
  const std::string role = argv[1], uri = argv[2], path = argv[3];
  std::uint64_t chunk = file_transfer::default_chunk;
  if (argc == 6 && std::strcmp(argv[4], "--chunk") == 0) {
    chunk = std::strtoull(argv[5], nullptr, 10);
    if (chunk == 0 || chunk > file_transfer::largest_chunk) {
      std::fprintf(stderr, "file_transfer: --chunk takes 1 .. %llu bytes\n",
                   static_cast<unsigned long long>(file_transfer::largest_chunk));
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
