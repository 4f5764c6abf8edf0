#pragma once
// The registered memory a context may hold, shared by every provider and link it uses.

#include <cstddef>
#include <cstdint>

namespace bellows::fabric {

struct memory_budget {
  std::size_t limit = SIZE_MAX;
  std::size_t used = 0;
  /// Released rings kept resident and zeroed for the next channel (shm), across every link:
  /// a fresh ring's page faults were most of a first enlargement's time. They count against
  /// `limit` for new memory, and go first when it runs short.
  std::size_t warm = 0;
  std::size_t warm_limit = 0;

  /// Takes `bytes` if they fit under the limit.
  bool take(std::size_t bytes) noexcept {
    if (bytes > limit || used > limit - bytes) return false;
    used += bytes;
    return true;
  }
  void give_back(std::size_t bytes) noexcept { used -= bytes; }
};

}  // namespace bellows::fabric
