// The registry of accepted links that a reopened listener serves (shm and tcp connectors):
// it finds and serves only live links, and sweeps gone ones once it has doubled, so that a
// long-lived listener's accepts neither grow it without bound nor walk it each time.
#include "fabric/link_registry.hpp"

#include <catch2/catch.hpp>

#include <memory>
#include <vector>

namespace {

struct fake_link {
  int served = 0;
  void serve_accepts(const bellows::fabric::accept_hook&) { ++served; }
};

using registry = bellows::fabric::link_registry<fake_link>;

}  // namespace

TEST_CASE("link registry: only live links are found and served", "[fabric]") {
  registry r;
  auto kept = std::make_shared<fake_link>();
  auto gone = std::make_shared<fake_link>();
  r.add(1, kept);
  r.add(2, gone);
  const std::weak_ptr<fake_link> gone_weak = gone;
  gone.reset();
  CHECK(r.find(1) == kept);
  CHECK(r.find(2) == nullptr);
  CHECK(r.find(3) == nullptr);
  r.serve_accepts({});
  CHECK(kept->served == 1);
  CHECK(gone_weak.expired());
  CHECK_FALSE(r.empty());
  kept.reset();
  CHECK(r.empty());
  CHECK(r.entries() == 0);
}

TEST_CASE("link registry: gone links are swept once it has doubled, not on every add", "[fabric]") {
  registry r;
  std::vector<std::shared_ptr<fake_link>> live;
  constexpr std::size_t floor = registry::minimum_sweep_size;
  // Each link goes away right after it was added, as short-lived peers' links do.
  for (std::uint64_t key = 0; key < 10 * floor; ++key) {
    r.add(key, std::make_shared<fake_link>());
    CHECK(r.entries() <= 2 * floor);
  }
  CHECK(r.entries() > 1);  // not swept on every add
  // With live links, the bound grows with them.
  for (std::uint64_t key = 1000; key < 1000 + 3 * floor; ++key) {
    live.push_back(std::make_shared<fake_link>());
    r.add(key, live.back());
  }
  for (std::uint64_t key = 2000; key < 2000 + 10 * floor; ++key) {
    r.add(key, std::make_shared<fake_link>());
    CHECK(r.entries() <= 2 * (live.size() + floor));
  }
  for (std::uint64_t key = 1000; key < 1000 + 3 * floor; ++key) CHECK(r.find(key) != nullptr);
  CHECK_FALSE(r.empty());
  CHECK(r.entries() == live.size());
}
