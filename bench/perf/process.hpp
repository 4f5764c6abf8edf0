#pragma once
// Facts about the running process that the benchmarks report or need.

#include <sched.h>
#include <unistd.h>
#include <cstddef>
#include <cstdio>

namespace perf {

/// Resident set size in bytes (every touched page, the mapped rings of shm arenas included).
inline std::size_t resident_bytes() {
  std::FILE* f = std::fopen("/proc/self/statm", "r");
  if (!f) return 0;
  unsigned long total = 0, resident = 0;
  const int n = std::fscanf(f, "%lu %lu", &total, &resident);
  std::fclose(f);
  return n == 2 ? resident * static_cast<std::size_t>(::sysconf(_SC_PAGESIZE)) : 0;
}

/// The largest resident set size this process has had (VmHWM), in bytes.
inline std::size_t peak_resident_bytes() {
  std::FILE* f = std::fopen("/proc/self/status", "r");
  if (!f) return 0;
  char line[256];
  unsigned long kib = 0;
  while (std::fgets(line, sizeof line, f))
    if (std::sscanf(line, "VmHWM: %lu kB", &kib) == 1) break;
  std::fclose(f);
  return kib * 1024;
}

/// Pins the calling process to one CPU, as ucx_perftest -c does, so that two spinning
/// processes never share a core. A negative cpu leaves placement to the kernel.
inline void pin_to(int cpu) {
  if (cpu < 0) return;
  cpu_set_t set;
  CPU_ZERO(&set);
  CPU_SET(cpu, &set);
  if (::sched_setaffinity(0, sizeof set, &set) != 0) std::perror("bellows-perf: sched_setaffinity");
}

}  // namespace perf
