#pragma once
// The channel suite runs once per provider: shm everywhere, rdma where a device exists (the
// Soft-RoCE guest of tests/rxe). BELLOWS_TEST_PROVIDERS=shm,rdma chooses; the guest runs
// only rdma, since the host has run shm already.

#include "support/rdma.hpp"

#include <catch2/catch.hpp>

#include <cstdlib>
#include <functional>
#include <string>

namespace bellows::test {

enum class provider { shm, rdma };

inline const char* to_string(provider p) { return p == provider::shm ? "shm" : "rdma"; }

/// Whether this run covers `p`; an rdma case without a device says it is skipped.
inline bool wanted(provider p) {
  const char* chosen = std::getenv("BELLOWS_TEST_PROVIDERS");
  if (chosen != nullptr && std::string(chosen).find(to_string(p)) == std::string::npos) return false;
  return p == provider::shm || rdma_here();
}

/// The URI a test's listener uses: shm://NAME, or the guest's RDMA address on a port derived
/// from the (unique) name.
inline std::string uri_for(provider p, const std::string& name) {
  if (p == provider::shm) return "shm://" + name;
  return rdma_uri(static_cast<std::uint16_t>(20000 + std::hash<std::string>{}(name) % 40000));
}

/// Scale of a test on `p`: Soft-RoCE under an emulated CPU sets a queue pair up in about a
/// millisecond and moves tens of MB/s, so the rdma run uses fewer channels.
inline int scaled(provider p, int on_shm, int on_rdma) { return p == provider::shm ? on_shm : on_rdma; }

}  // namespace bellows::test
