#pragma once
// A link: what connects this reactor to one peer and carries channels over it (shm: any number
// per pair of processes; verbs: one queue pair per channel; sim: an in-process pair for tests).
// On top of the provider's memory, writes and doorbells it tells channels about the peer's
// detaches and its own failure (through channel_endpoint).

#include "fabric/endpoint.hpp"
#include "fabric/provider.hpp"

#include <bellows/endpoint.hpp>

#include <cstdint>
#include <vector>

namespace bellows::fabric {

class link : public provider {
 public:
  /// The channel `local_id` (opened or accepted over this link) is served by `endpoint`.
  virtual void attach(std::uint32_t local_id, channel_endpoint* endpoint) = 0;
  /// Tells the peer we will not write into its channel `peer_id` again.
  virtual void send_detach(std::uint32_t peer_id) = 0;
  /// The local channel is gone: its regions are freed once the peer has detached too, since
  /// until then the peer may still write into them.
  virtual void retire(std::uint32_t local_id, std::vector<std::uint64_t> regions) = 0;
  /// Who the peer is, as this provider knows it (the kernel's word, not the peer's).
  virtual bellows::endpoint peer_endpoint() const = 0;
};

}  // namespace bellows::fabric
