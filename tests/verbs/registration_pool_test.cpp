// The verbs registration pool on a real RDMA device. Without one (this host's kernel has no
// RDMA) each test says so and passes; tests/rxe/run_in_guest.sh runs them on Soft-RoCE.

#include "fabric/verbs/registration_pool.hpp"
#include "fabric/verbs/device.hpp"

#include <bellows/error.hpp>

#include "support/skips.hpp"

#include <catch2/catch.hpp>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <memory>

using bellows::fabric::memory_budget;
using bellows::verbs::device;
using bellows::verbs::registration_pool;

namespace {

std::unique_ptr<device> device_or_skip() {
  auto d = device::open();
  // Inside the Soft-RoCE guest a missing device is a failure, not a reason to skip.
  if (!d && std::getenv("BELLOWS_IN_RXE_GUEST") != nullptr) FAIL("no RDMA device in the rxe guest");
  if (!d) {
    bellows::test::skip_case("no RDMA device (" + d.failure().message() + "); tests/rxe runs this on Soft-RoCE");
    return nullptr;
  }
  return std::move(*d);
}

}  // namespace

TEST_CASE("verbs: a device name that does not exist is no_such_device", "[verbs]") {
  auto d = device::open("bellows-no-such-device");
  REQUIRE(!d);
  CHECK(d.failure() == std::errc::no_such_device);
}

TEST_CASE("verbs: a warm registration pool calls ibv_reg_mr no more", "[verbs]") {
  auto dev = device_or_skip();
  if (!dev) return;
  memory_budget budget;
  registration_pool pool(dev->protection_domain(), budget);

  for (int i = 0; i < 1000; ++i) {
    auto r = pool.allocate(64 * 1024);
    REQUIRE(r);
    CHECK(pool.memory_region(r->handle) != nullptr);
    pool.release(r->handle);
  }
  CHECK(pool.registrations() == 1);

  // One registration per size class in use at once; the 4 KiB ring, the 128 B control block
  // and the 1 MiB ring each get theirs, and a second round reuses them all.
  for (int round = 0; round < 2; ++round) {
    auto control = pool.allocate(128);
    auto small = pool.allocate(4096);
    auto large = pool.allocate(1 << 20);
    REQUIRE((control && small && large));
    pool.release(control->handle);
    pool.release(small->handle);
    pool.release(large->handle);
  }
  CHECK(pool.registrations() == 4);
  CHECK(pool.bytes_in_use() == 0);
  CHECK(budget.used == pool.bytes_cached());
}

TEST_CASE("verbs: a reused block is zeroed before it is handed out again", "[verbs]") {
  auto dev = device_or_skip();
  if (!dev) return;
  memory_budget budget;
  registration_pool pool(dev->protection_domain(), budget);
  auto first = pool.allocate(4096);
  REQUIRE(first);
  std::memset(first->data, 0xab, first->length);
  pool.release(first->handle);
  auto second = pool.allocate(4096);
  REQUIRE(second);
  CHECK(second->data == first->data);
  CHECK(std::all_of(second->data, second->data + second->length, [](std::byte b) { return b == std::byte{0}; }));
}

TEST_CASE("verbs: the budget counts registered memory, cached or not, and trims the cache", "[verbs]") {
  auto dev = device_or_skip();
  if (!dev) return;
  memory_budget budget;
  budget.limit = 192 * 1024;
  registration_pool pool(dev->protection_domain(), budget);
  auto a = pool.allocate(64 * 1024);
  auto b = pool.allocate(64 * 1024);
  REQUIRE((a && b));
  CHECK(budget.used == 128 * 1024);
  auto too_much = pool.allocate(128 * 1024);
  REQUIRE(!too_much);
  CHECK(too_much.failure() == bellows::error::budget_exhausted);

  // Released blocks stay registered, and charged, until a larger request needs the room.
  pool.release(a->handle);
  pool.release(b->handle);
  CHECK(budget.used == 128 * 1024);
  auto bigger = pool.allocate(128 * 1024);
  REQUIRE(bigger);
  CHECK(pool.bytes_cached() == 0);
  CHECK(budget.used == 128 * 1024);
  CHECK(pool.registrations() == 3);
}
