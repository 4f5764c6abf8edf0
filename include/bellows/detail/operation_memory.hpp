#pragma once
// Memory for pending operations' records, recycled per thread: a channel that sends and
// receives in steady state takes no memory from the heap per operation. A record is usually
// freed on the thread that made it (the one running the io_context); one freed elsewhere joins
// that thread's cache instead, which is as good. Each thread keeps a few blocks of each size
// class and returns them to the heap when it ends.

#include <array>
#include <cstddef>
#include <new>

namespace bellows::detail {

class operation_memory {
 public:
  static void* allocate(std::size_t bytes) {
    if (auto* cls = class_of(bytes)) {
      if (cls->count != 0) return cls->blocks[--cls->count];
      return ::operator new(class_bytes(bytes));
    }
    return ::operator new(bytes);
  }

  static void deallocate(void* block, std::size_t bytes) noexcept {
    if (auto* cls = class_of(bytes); cls != nullptr && cls->count < cls->blocks.size()) {
      cls->blocks[cls->count++] = block;
      return;
    }
    ::operator delete(block);
  }

 private:
  static constexpr std::size_t granule = 64;
  static constexpr std::size_t classes = 8;  // records up to 512 bytes
  struct size_class {
    std::array<void*, 8> blocks{};
    std::size_t count = 0;
  };
  struct cache {
    std::array<size_class, classes> by_size;
    ~cache() {
      ended() = true;
      for (auto& cls : by_size)
        while (cls.count != 0) ::operator delete(cls.blocks[--cls.count]);
    }
  };
  /// Whether this thread's cache is gone: a record freed later (an io_context that outlives
  /// the thread's locals) goes straight back to the heap.
  static bool& ended() noexcept {
    thread_local bool gone = false;  // trivially destructible: valid to the thread's very end
    return gone;
  }

  static std::size_t class_bytes(std::size_t bytes) noexcept { return (bytes + granule - 1) / granule * granule; }
  static size_class* class_of(std::size_t bytes) noexcept {
    const std::size_t index = (bytes + granule - 1) / granule;
    if (index == 0 || index > classes || ended()) return nullptr;
    thread_local cache mine;
    return &mine.by_size[index - 1];
  }
};

}  // namespace bellows::detail
