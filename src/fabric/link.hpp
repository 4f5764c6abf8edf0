#pragma once
// A link: what connects this reactor to one peer and carries any number of channels over it
// (shm: one per pair of processes; sim: an in-process pair for tests; verbs later). On top of
// the provider's memory, writes and doorbells it tells channels about the peer's detaches and
// its own failure, and lets the reactor collect doorbells and sleep.

#include "fabric/endpoint.hpp"
#include "fabric/provider.hpp"

#include <cstddef>
#include <cstdint>
#include <string>
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

  /// Reports the doorbells rung since the last call to their endpoints; returns how many.
  virtual std::size_t drain_doorbells() = 0;
  /// The reactor is about to sleep: from now on doorbells must wake it. False when one is
  /// already waiting (the reactor then stays awake).
  virtual bool prepare_to_sleep() = 0;
  virtual void woke_up() = 0;
  /// Starts or stops watching for the peer's messages and failure; a disarmed link holds no
  /// outstanding work, so an io_context with nothing pending can return from run().
  virtual void arm() = 0;
  virtual void disarm() = 0;
  /// The io_context is being destroyed: let go without touching its services again.
  virtual void shutdown() = 0;

  virtual bool failed() const noexcept = 0;
  /// No channel is open or opening: the link can be dropped.
  virtual bool unused() const noexcept = 0;
  /// For a link this side opened by name, that name (it is then reused); empty otherwise.
  virtual const std::string& name() const noexcept = 0;
};

}  // namespace bellows::fabric
