// The tcp link's regions: rings it allocates and counts against the budget, and receive buffers
// it lends, which count nothing, are never freed by it, and once taken back turn the peer's
// late writes into drops rather than errors, for as long as such writes can still be in flight.
#include "fabric/tcp/regions.hpp"

#include <catch2/catch.hpp>

#include <vector>

using bellows::tcp::regions;

TEST_CASE("tcp regions: a lent buffer is found while lent, dropped-into once taken back, never counted", "[tcp]") {
  bellows::fabric::memory_budget budget;
  regions r(budget, 77);
  auto ring = r.allocate(4096);
  REQUIRE(ring);
  std::vector<std::byte> buffer(1 << 20);
  auto lent = r.lend(buffer);
  REQUIRE(lent);
  CHECK(lent->key == 77);
  CHECK(r.registered_bytes() == 4096);  // the application's memory is not registered memory
  CHECK(budget.used == 4096);

  CHECK(r.find(77, lent->address, buffer.size()) == buffer.data());
  CHECK(r.find(77, lent->address + 100, 10) == buffer.data() + 100);
  CHECK(r.find(77, lent->address, buffer.size() + 1) == nullptr);  // past its end
  CHECK(r.find(78, lent->address, 8) == nullptr);                  // another key
  CHECK(r.lent_memory(lent->handle).data() == buffer.data());
  CHECK(!r.taken_back(77, lent->address));

  r.release(lent->handle);
  CHECK(r.find(77, lent->address, 8) == nullptr);
  CHECK(r.taken_back(77, lent->address));  // a late write lands nowhere, and is no lie
  CHECK(r.lent_memory(lent->handle).empty());
  CHECK(!r.taken_back(77, lent->address + (std::uint64_t{1} << regions::address_shift)));  // never lent
  CHECK(r.find(77, ring->address, 4096) == ring->data);
}

TEST_CASE("tcp regions: loans taken back are remembered a bounded while, and live ones stay", "[tcp]") {
  bellows::fabric::memory_budget budget;
  regions r(budget, 5);
  std::vector<std::byte> buffer(64);
  const auto live = r.lend(buffer);
  REQUIRE(live);
  const auto first_returned = r.lend(buffer);
  REQUIRE(first_returned);
  r.release(first_returned->handle);
  for (int i = 0; i < 1100; ++i) {
    auto l = r.lend(buffer);
    REQUIRE(l);
    CHECK(l->handle != live->handle);
    r.release(l->handle);
  }
  CHECK(!r.taken_back(5, first_returned->address));  // forgotten: by now nothing can be in flight
  CHECK(r.find(5, live->address, buffer.size()) == buffer.data());
}

TEST_CASE("tcp regions: an address keeps its memory's offset within a page, so a writer knows where its bytes land",
          "[tcp]") {
  bellows::fabric::memory_budget budget;
  regions r(budget, 9);
  std::vector<std::byte> buffer(8192);
  std::byte* const at = buffer.data() + 4096 - (reinterpret_cast<std::uintptr_t>(buffer.data()) & 4095) + 16;
  const auto lent = r.lend({at, 1000});
  REQUIRE(lent);
  CHECK((lent->address & 4095) == 16);
  CHECK(r.find(9, lent->address, 1000) == at);
  CHECK(r.find(9, lent->address + 999, 1) == at + 999);
  CHECK(r.find(9, lent->address - 1, 1) == nullptr);  // below the region's first byte
  const auto ring = r.allocate(4096);
  REQUIRE(ring);
  CHECK((ring->address & 4095) == (reinterpret_cast<std::uintptr_t>(ring->data) & 4095));
  CHECK(r.find(9, ring->address, 4096) == ring->data);
  CHECK(!r.allocate(regions::max_length + 1));
}
