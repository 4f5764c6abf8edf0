#pragma once
// The channel suite runs once per provider: shm and tcp (over loopback) everywhere, rdma where a
// device exists (the Soft-RoCE guest of tests/rxe). BELLOWS_TEST_PROVIDERS=shm,tcp,rdma
// chooses; the guest runs only rdma, since the host has run the others already. A case
// generates only the providers it will run: one missing here is reported as skipped, never as
// a pass.

#include "support/rdma.hpp"
#include "support/skips.hpp"

#include <catch2/catch.hpp>

#include <cstdlib>
#include <functional>
#include <string>
#include <vector>

namespace bellows::test {

enum class provider { shm, tcp, rdma };

inline const char* to_string(provider p) {
  switch (p) {
    case provider::shm: return "shm";
    case provider::tcp: return "tcp";
    case provider::rdma: return "rdma";
  }
  return "?";
}

/// Whether BELLOWS_TEST_PROVIDERS (all when unset) asks for `p`.
inline bool chosen(provider p) {
  const char* names = std::getenv("BELLOWS_TEST_PROVIDERS");
  return names == nullptr || std::string(names).find(to_string(p)) != std::string::npos;
}

/// The providers a case runs over here, for GENERATE(from_range(providers_here())).
inline std::vector<provider> providers_here() {
  std::vector<provider> here;
  for (provider p : {provider::shm, provider::tcp, provider::rdma}) {
    if (!chosen(p)) continue;
    if (p == provider::rdma && !rdma_here()) {
      skip_variant("rdma: no RDMA device here (tests/rxe runs the suite on Soft-RoCE)");
      continue;
    }
    here.push_back(p);
  }
  if (here.empty()) FAIL("BELLOWS_TEST_PROVIDERS asks for no provider this host has");
  return here;
}

/// The URI a test's listener uses: shm://NAME, or loopback (tcp) or the guest's RDMA address
/// on a port derived from the (unique) name. tcp ports stay below the kernel's ephemeral range,
/// where connections' own ports would collide with them.
inline std::string uri_for(provider p, const std::string& name) {
  const auto hash = std::hash<std::string>{}(name);
  if (p == provider::shm) return "shm://" + name;
  if (p == provider::tcp) return "tcp://127.0.0.1:" + std::to_string(20000 + hash % 12000);
  return rdma_uri(static_cast<std::uint16_t>(20000 + hash % 40000));
}

/// Scale of a test on `p`: Soft-RoCE under an emulated CPU sets a queue pair up in about a
/// millisecond and moves tens of MB/s, so the rdma run uses fewer channels (tcp runs as shm).
inline int scaled(provider p, int on_shm, int on_rdma) { return p == provider::rdma ? on_rdma : on_shm; }

}  // namespace bellows::test
