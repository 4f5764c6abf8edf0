// The shm doorbell ring on a plain buffer: ids arrive in order and once, a full ring falls back
// to the overflow word, a sleeping owner is always woken, and a peer writing garbage into the
// ring costs only its own doorbells.
#include "fabric/shm/doorbell_ring.hpp"

#include <catch2/catch.hpp>

#include <cstring>
#include <vector>

namespace doorbell = bellows::shm::doorbell;

namespace {

struct header_memory {
  alignas(64) std::byte bytes[doorbell::bytes] = {};
  std::byte* data() { return bytes; }
};

struct owner {
  std::uint64_t consumed = 0;
  std::vector<std::uint32_t> ids;
  int overflows = 0;

  std::uint64_t drain(header_memory& h) {
    return doorbell::drain(
        h.data(), consumed, [&](std::uint32_t id) { ids.push_back(id); }, [&] { ++overflows; });
  }
};

}  // namespace

TEST_CASE("doorbells arrive in order, once, across many laps of the ring", "[doorbell]") {
  auto h = std::make_unique<header_memory>();
  doorbell::producer peer;
  owner me;
  std::uint32_t next_id = 0;
  std::uint32_t expected = 0;
  // Batches of varying size, 3.5 laps in all: the position tags must tell a fresh entry from the
  // one the slot held a lap earlier.
  for (int batch = 0; batch < 100; ++batch) {
    const auto n = static_cast<std::uint32_t>(1 + (batch * 37) % 250);
    for (std::uint32_t i = 0; i < n; ++i) CHECK_FALSE(doorbell::push(h->data(), next_id++, peer));
    CHECK(me.drain(*h) == n);
    REQUIRE(me.ids.size() == n);
    for (auto id : me.ids) CHECK(id == expected++);
    me.ids.clear();
    CHECK(me.drain(*h) == 0);
  }
  CHECK(peer.produced > 3 * doorbell::capacity);
  CHECK(me.overflows == 0);
}

TEST_CASE("a full doorbell ring sets the overflow word instead of overwriting", "[doorbell]") {
  auto h = std::make_unique<header_memory>();
  doorbell::producer peer;
  owner me;
  for (std::uint32_t i = 0; i < doorbell::capacity + 10; ++i) doorbell::push(h->data(), i, peer);
  CHECK(peer.produced == doorbell::capacity);
  me.drain(*h);
  CHECK(me.ids.size() == doorbell::capacity);
  CHECK(me.ids.back() == doorbell::capacity - 1);
  CHECK(me.overflows == 1);
  // The owner published its progress, so the producer uses the ring again.
  me.ids.clear();
  doorbell::push(h->data(), 42, peer);
  me.drain(*h);
  CHECK(me.ids == std::vector<std::uint32_t>{42});
  CHECK(me.overflows == 1);
}

TEST_CASE("an owner about to sleep is woken by exactly the push that finds it asleep", "[doorbell]") {
  auto h = std::make_unique<header_memory>();
  doorbell::producer peer;
  owner me;
  CHECK(doorbell::prepare_to_sleep(h->data(), me.consumed));
  CHECK(doorbell::push(h->data(), 1, peer));
  CHECK_FALSE(doorbell::push(h->data(), 2, peer));
  // A doorbell already waiting keeps the owner awake.
  CHECK_FALSE(doorbell::prepare_to_sleep(h->data(), me.consumed));
  me.drain(*h);
  CHECK(me.ids == std::vector<std::uint32_t>{1, 2});
  CHECK(doorbell::prepare_to_sleep(h->data(), me.consumed));
  doorbell::woke_up(h->data());
  CHECK_FALSE(doorbell::push(h->data(), 3, peer));
}

TEST_CASE("a peer scribbling over the doorbell ring cannot hold the owner or reach past it", "[doorbell]") {
  auto h = std::make_unique<header_memory>();
  owner me;
  SECTION("entries with the tags the owner expects, a lap of them: one drain takes at most a lap") {
    auto* entries = reinterpret_cast<std::uint64_t*>(h->data() + doorbell::entries_offset);
    for (std::uint64_t p = 0; p < doorbell::capacity; ++p) entries[p] = doorbell::entry(p, 0xffffffffu);
    CHECK(me.drain(*h) == doorbell::capacity);
    // The next lap's tags were never written: nothing more.
    CHECK(me.drain(*h) == 0);
    for (auto id : me.ids) CHECK(id == 0xffffffffu);  // the caller validates ids
  }
  SECTION("random bytes: no entry carries the expected tag, so none is taken") {
    std::uint64_t state = 0x9e3779b97f4a7c15u;
    for (std::size_t i = 0; i < doorbell::bytes; ++i) {
      state = state * 6364136223846793005u + 1442695040888963407u;
      h->bytes[i] = static_cast<std::byte>(state >> 56);
    }
    std::memset(h->data() + doorbell::overflow_offset, 0, 8);
    CHECK(me.drain(*h) == 0);
    CHECK(me.ids.empty());
    // Its own consumed count is private: a peer rewriting the shared copy does not move it.
    std::memset(h->data() + doorbell::consumed_offset, 0xff, 8);
    me.drain(*h);
    CHECK(me.consumed == 0);
  }
}
