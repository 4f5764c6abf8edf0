// Where a tcp link puts a large payload in the stream: away from the offsets at which the
// kernel's copy out of the sender's memory, or into the receiver's, would run slowly.
#include "fabric/tcp/copy_alignment.hpp"

#include <catch2/catch.hpp>

using bellows::tcp::copy_aliases;
using bellows::tcp::padding_before;
using bellows::tcp::page_bytes;

namespace {

constexpr std::uint64_t header_bytes = sizeof(bellows::tcp::record_header);

bool clear_at(std::uint64_t at, std::uint64_t source, std::uint64_t destination) {
  at &= page_bytes - 1;
  return !copy_aliases(source, at) && !copy_aliases(at, destination);
}

}  // namespace

TEST_CASE("tcp copy alignment: a destination a little ahead of its source within a page is the slow case", "[tcp]") {
  CHECK(copy_aliases(16, 32));   // the measured case: malloc's offset, behind a record header
  CHECK(copy_aliases(4080, 8));  // ahead across the page boundary
  CHECK(copy_aliases(0, 127));
  CHECK(!copy_aliases(0, 128));
  CHECK(!copy_aliases(32, 16));    // behind: the loads are past those stores
  CHECK(!copy_aliases(16, 16));    // level: each load's address was stored a page ago
  CHECK(!copy_aliases(16, 4112));  // offsets within a page, whatever page
}

TEST_CASE("tcp copy alignment: no padding where both copies are clear, and padding that clears them otherwise",
          "[tcp]") {
  CHECK(padding_before(32, 32, 32) == 0);
  CHECK(padding_before(32, 1000, 3000) == 0);
  const auto pad = padding_before(32, 16, 32);
  CHECK(pad > header_bytes);  // a padding record carries at least one byte
  CHECK(clear_at(32 + pad, 16, 32));
  const auto for_destination = padding_before(1000, 3000, 1050);  // the receiver's copy would be slow
  CHECK(for_destination > header_bytes);
  CHECK(clear_at(1000 + for_destination, 3000, 1050));

  std::size_t padded = 0;
  for (std::uint64_t source = 0; source < page_bytes; source += 56)
    for (std::uint64_t destination = 0; destination < page_bytes; destination += 72)
      for (std::uint64_t at = 0; at < page_bytes; at += 40) {
        const auto p = padding_before(at, source, destination);
        if (p == 0) {
          REQUIRE(clear_at(at, source, destination));
          continue;
        }
        ++padded;
        REQUIRE(p > header_bytes);
        REQUIRE(p - header_bytes <= bellows::tcp::max_padding);
        REQUIRE(clear_at(at + p, source, destination));
      }
  CHECK(padded > 0);
}
