// The shm provider's large-payload copy (streaming stores above a threshold) copies exactly the
// bytes asked for, at any alignment, and touches nothing beside them.
#include "fabric/shm/bulk_copy.hpp"

#include <catch2/catch.hpp>

#include <vector>

TEST_CASE("copy_to_peer copies every byte and nothing more, at any size and alignment", "[shm]") {
  using bellows::shm::copy_to_peer;
  using bellows::shm::streaming_copy_threshold;
  const std::size_t sizes[] = {0,
                               1,
                               63,
                               4096,
                               streaming_copy_threshold - 1,
                               streaming_copy_threshold,
                               streaming_copy_threshold + 1,
                               streaming_copy_threshold + 63,
                               1 << 20};
  for (const std::size_t size : sizes) {
    for (const std::size_t shift : {0, 1, 8, 15}) {
      std::vector<std::byte> source(size + 16);
      for (std::size_t i = 0; i < source.size(); ++i) source[i] = static_cast<std::byte>(i * 131 + size);
      std::vector<std::byte> target(size + 64, std::byte{0xee});
      copy_to_peer(target.data() + 16 + shift, source.data() + shift, size);
      INFO("size " << size << " shifted by " << shift);
      CHECK(std::equal(source.begin() + static_cast<std::ptrdiff_t>(shift),
                       source.begin() + static_cast<std::ptrdiff_t>(shift + size),
                       target.begin() + static_cast<std::ptrdiff_t>(16 + shift)));
      std::size_t untouched = 0;
      for (std::size_t i = 0; i < target.size(); ++i)
        if ((i < 16 + shift || i >= 16 + shift + size) && target[i] == std::byte{0xee}) ++untouched;
      CHECK(untouched == target.size() - size);
    }
  }
}
