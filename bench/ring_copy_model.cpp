// The file transfer's pipeline without bellows: what this machine allows. One process reads a
// file with pread into a ring shared with a second process, a chunk at a time from page-aligned
// offsets, each landing `shift` bytes past the start of its slot (a page of each slot is left for
// the shift); the second waits for each chunk, sums it with
// CRC-32C and, with --write, writes it into a destination reserved with fallocate, then frees
// the slot. The two spin on two counters in the ring's last page. Prints the rate.
//   ring-copy-model SOURCE [--shift BYTES] [--write DESTINATION] [--chunk BYTES] [--slots N]
// The source should be in the page cache (read it once first), as for bellows_file_transfer.

#include <isa-l/crc.h>

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

namespace {

constexpr std::size_t page = 4096;

struct settings {
  const char* source = nullptr;
  const char* destination = nullptr;
  std::size_t shift = 0;
  std::size_t chunk = 256 * 1024;
  std::size_t slots = 4;
};

[[noreturn]] void fail(const char* what) {
  std::perror(what);
  std::exit(1);
}

constexpr const char* usage_text =
    "usage: ring-copy-model SOURCE [--shift BYTES] [--write DESTINATION] [--chunk BYTES] [--slots N]\n"
    "  SOURCE       a file, best already in the page cache; read a chunk at a time from page-aligned offsets\n"
    "  --shift      where each chunk lands past the start of its slot: 0 to 4095 (default 0)\n"
    "  --write      also write each chunk into DESTINATION, reserved with fallocate first\n"
    "  --chunk      slot size, a multiple of 4096 above it (default 262144); a chunk is a page less\n"
    "  --slots      slots in the ring, 1 to 1024 (default 4)\n";

bool number(const char* text, std::size_t& out) {
  char* end = nullptr;
  errno = 0;
  const unsigned long long value = std::strtoull(text, &end, 10);
  if (errno != 0 || end == text || *end != '\0' || text[0] == '-') return false;
  out = value;
  return true;
}

bool parse(int argc, char** argv, settings& s) {
  if (argc < 2 || argv[1][0] == '-' || argc % 2 != 0) return false;
  s.source = argv[1];
  for (int i = 2; i + 1 < argc; i += 2) {
    const std::string flag = argv[i];
    bool valid = true;
    if (flag == "--write")
      s.destination = argv[i + 1];
    else if (flag == "--shift")
      valid = number(argv[i + 1], s.shift);
    else if (flag == "--chunk")
      valid = number(argv[i + 1], s.chunk);
    else if (flag == "--slots")
      valid = number(argv[i + 1], s.slots);
    else
      valid = false;
    if (!valid) return false;
  }
  return s.shift < page && s.chunk % page == 0 && s.chunk > page && s.slots > 0 && s.slots <= 1024;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc == 2 && (std::strcmp(argv[1], "--help") == 0 || std::strcmp(argv[1], "-h") == 0)) {
    std::fputs(usage_text, stdout);
    return 0;
  }
  settings s;
  if (!parse(argc, argv, s)) {
    std::fprintf(stderr, "ring-copy-model: bad arguments\n%s", usage_text);
    return 2;
  }
  const int source = ::open(s.source, O_RDONLY);
  struct stat about {};
  if (source < 0 || ::fstat(source, &about) != 0) fail(s.source);
  const std::size_t payload = s.chunk - page;
  const std::size_t chunks = static_cast<std::size_t>(about.st_size) / payload;
  if (chunks == 0) fail("the source is smaller than one chunk");
  int destination = -1;
  if (s.destination) {
    destination = ::open(s.destination, O_CREAT | O_TRUNC | O_WRONLY, 0644);
    if (destination < 0 || ::fallocate(destination, 0, 0, static_cast<off_t>(chunks * payload)) != 0)
      fail(s.destination);
  }

  const std::size_t ring_bytes = s.chunk * s.slots + page;
  void* mapped = ::mmap(nullptr, ring_bytes, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  if (mapped == MAP_FAILED) fail("mmap");
  auto* ring = static_cast<char*>(mapped);
  std::memset(ring, 0, ring_bytes);
  // Written by one process each, on lines of their own.
  auto* written = new (ring + s.chunk * s.slots) std::atomic<std::size_t>(0);
  auto* freed = new (ring + s.chunk * s.slots + 128) std::atomic<std::size_t>(0);

  const auto start = std::chrono::steady_clock::now();
  const pid_t reader = ::fork();
  if (reader == 0) {
    for (std::size_t i = 0; i < chunks; ++i) {
      while (i - freed->load(std::memory_order_acquire) >= s.slots) {
      }
      char* slot = ring + (i % s.slots) * s.chunk + s.shift;
      if (::pread(source, slot, payload, static_cast<off_t>(i * payload)) != static_cast<ssize_t>(payload)) _exit(1);
      written->store(i + 1, std::memory_order_release);
    }
    _exit(0);
  }
  std::uint32_t crc = 0;
  for (std::size_t i = 0; i < chunks; ++i) {
    while (written->load(std::memory_order_acquire) <= i) {
    }
    const char* slot = ring + (i % s.slots) * s.chunk + s.shift;
    crc = crc32_iscsi(reinterpret_cast<unsigned char*>(const_cast<char*>(slot)), static_cast<int>(payload), crc);
    if (destination >= 0 &&
        ::pwrite(destination, slot, payload, static_cast<off_t>(i * payload)) != static_cast<ssize_t>(payload))
      fail(s.destination);
    freed->store(i + 1, std::memory_order_release);
  }
  int status = 0;
  ::waitpid(reader, &status, 0);
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) fail("the reading process");
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  std::printf("shift %zu, chunk %zu, %zu slots, %s: %.2f GB/s (crc %08x)\n", s.shift, s.chunk, s.slots,
              destination >= 0 ? "summed and written" : "summed", static_cast<double>(chunks * payload) / seconds / 1e9,
              crc);
  return 0;
}
