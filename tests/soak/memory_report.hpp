#pragma once
// Where a process's resident memory is, for a soak that found it grown: the heap as malloc
// counts it, and every mapping holding a MiB or more, by name (a memfd arena, the heap, an
// anonymous mapping of a large allocation). A leak report that names its mapping says at once
// whether rings, buffers or the allocator kept the memory.

#include <malloc.h>
#include <cctype>
#include <cstdio>
#include <ostream>
#include <string>

namespace bellows::test {

inline void report_resident_memory(std::ostream& out) {
  const struct mallinfo2 heap = ::mallinfo2();
  out << "  malloc: " << heap.uordblks << " B in use, " << heap.fordblks << " B free in " << heap.arena
      << " B of heap, " << heap.hblkhd << " B in " << heap.hblks << " mmapped blocks\n";
  std::FILE* f = std::fopen("/proc/self/smaps", "r");
  if (!f) return;
  char line[512];
  std::string mapping;
  while (std::fgets(line, sizeof line, f)) {
    unsigned long kib = 0;
    if (std::sscanf(line, "Rss: %lu kB", &kib) == 1) {
      if (kib >= 1024) out << "  " << kib << " KiB resident in " << mapping;
    } else if (std::isxdigit(static_cast<unsigned char>(line[0])) &&
               !std::isupper(static_cast<unsigned char>(line[0]))) {
      mapping = line;  // a mapping's first line, "start-end perms offset dev inode name", in lower-case hex
    }
  }
  std::fclose(f);
}

}  // namespace bellows::test
