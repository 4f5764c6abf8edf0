// The shm arena's warm pool: a released ring stays resident and zeroed for the next one of its
// size, up to the budget's warm bound; past the bound and under budget pressure its pages go
// back to the system.

#include "fabric/shm/arena.hpp"

#include <catch2/catch.hpp>

#include <sys/mman.h>
#include <unistd.h>
#include <algorithm>
#include <cstring>
#include <vector>

namespace shm = bellows::shm;

namespace {

constexpr std::size_t ring_bytes = 1 << 20;

/// Pages of [data, data + bytes) resident in memory now.
std::size_t resident_pages(const std::byte* data, std::size_t bytes) {
  std::vector<unsigned char> pages(bytes / shm::arena::page_bytes);
  REQUIRE(::mincore(const_cast<std::byte*>(data), bytes, pages.data()) == 0);
  return static_cast<std::size_t>(std::count_if(pages.begin(), pages.end(), [](unsigned char p) { return p & 1; }));
}

bool all_zero(const std::byte* data, std::size_t bytes) {
  return std::all_of(data, data + bytes, [](std::byte b) { return b == std::byte{0}; });
}

/// Allocates a ring and writes every byte of it, as a peer filling it would.
bellows::fabric::region used_ring(shm::arena& a) {
  auto r = a.allocate(ring_bytes);
  REQUIRE(r);
  std::memset(r->data, 0xab, ring_bytes);
  return *r;
}

}  // namespace

TEST_CASE("arena: a released ring within the warm bound comes back resident and zeroed", "[shm][arena]") {
  shm::memory_budget budget;
  budget.warm_limit = 4 * ring_bytes;
  auto a = shm::arena::create(64 << 20, budget);
  REQUIRE(a);
  const auto first = used_ring(*a);
  a->release(first.handle);
  CHECK(budget.warm == ring_bytes);
  CHECK(budget.used == 0);
  CHECK(resident_pages(first.data, ring_bytes) == ring_bytes / shm::arena::page_bytes);

  auto again = a->allocate(ring_bytes);
  REQUIRE(again);
  CHECK(again->data == first.data);  // the same, warm block
  CHECK(budget.warm == 0);
  CHECK(budget.used == ring_bytes);
  CHECK(all_zero(again->data, ring_bytes));
}

TEST_CASE("arena: past the warm bound, and on trim, released rings give their pages back", "[shm][arena]") {
  shm::memory_budget budget;
  budget.warm_limit = ring_bytes;
  auto a = shm::arena::create(64 << 20, budget);
  REQUIRE(a);
  const auto kept = used_ring(*a);
  const auto punched = used_ring(*a);
  a->release(kept.handle);
  a->release(punched.handle);  // the bound is full: this one goes back to the system
  CHECK(budget.warm == ring_bytes);
  CHECK(resident_pages(kept.data, ring_bytes) == ring_bytes / shm::arena::page_bytes);
  CHECK(resident_pages(punched.data, ring_bytes) == 0);
  CHECK(all_zero(punched.data, ring_bytes));

  a->trim();  // budget pressure
  CHECK(budget.warm == 0);
  CHECK(resident_pages(kept.data, ring_bytes) == 0);
  auto again = a->allocate(ring_bytes);
  REQUIRE(again);
  CHECK(all_zero(again->data, ring_bytes));
}

TEST_CASE("arena: warm memory counts against the budget and goes first when new memory needs room", "[shm][arena]") {
  shm::memory_budget budget;
  budget.limit = 2 * ring_bytes;
  budget.warm_limit = 2 * ring_bytes;
  auto a = shm::arena::create(64 << 20, budget);
  REQUIRE(a);
  const auto big = used_ring(*a);
  a->release(big.handle);
  REQUIRE(budget.warm == ring_bytes);
  // A block of the next class needs the whole budget: the warm ring is punched to make room.
  auto whole = a->allocate(2 * ring_bytes);
  REQUIRE(whole);
  CHECK(budget.warm == 0);
  CHECK(budget.used == 2 * ring_bytes);
  CHECK(resident_pages(big.data, ring_bytes) == 0);
}
