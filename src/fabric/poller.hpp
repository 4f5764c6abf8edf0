#pragma once
// What the reactor polls: one seam for every provider. A shm link (its doorbell ring), the
// verbs network (its completion queues), a simulated link: each takes what arrived and tells the
// channels concerned, and each says whether the reactor may sleep and how it will be woken (by a
// write to the reactor's eventfd, which every poller is given when it is made).

#include <cstddef>
#include <vector>

namespace bellows::fabric {

class poller {
 public:
  virtual ~poller() = default;

  /// Takes what arrived since the last call (doorbells, completions) and reports it to the
  /// channels; returns how much it found.
  virtual std::size_t poll() = 0;
  /// The reactor is about to sleep: from now on an arrival must wake it. False when something
  /// already waits (the reactor then stays awake).
  virtual bool prepare_to_sleep() = 0;
  /// The reactor lets go of the io_context (nothing is pending) yet must still answer its peers:
  /// from now on an arrival must make the reactor's eventfd, or a descriptor added to
  /// `descriptors`, readable, without an asio wait (that would count as work). False when
  /// something already waits. Providers that wake through the eventfd alone need not override.
  virtual bool prepare_to_idle(std::vector<int>& descriptors) {
    (void)descriptors;
    return prepare_to_sleep();
  }
  /// The reactor is about to let go of the io_context: take in what the descriptors already
  /// hold (a peer's death above all), since they are not watched while it is idle.
  virtual void last_look() {}
  /// The reactor is awake again (called before every poll): arrivals need not wake it.
  virtual void woke_up() = 0;
  /// Starts or stops watching its descriptors (sockets, event channels). A disarmed poller holds
  /// no outstanding work, so an io_context with nothing pending can return from run().
  virtual void arm() = 0;
  virtual void disarm() = 0;
  /// Work that must finish before the reactor may let go of the io_context (last writes of a
  /// closing connection).
  virtual bool busy() const noexcept { return false; }
  /// The memory budget is short: give back what is kept warm for reuse.
  virtual void trim() {}
  /// The io_context is being destroyed: let go without touching its services again.
  virtual void shutdown() = 0;
  /// Nothing more will come of it (failed, or no channel uses it): the reactor drops it.
  virtual bool finished() const noexcept = 0;
  /// The reactor no longer polls it (it was finished, or the reactor shut down).
  virtual void dropped() noexcept {}
  /// Connections it holds, for statistics.
  virtual std::size_t connections() const noexcept { return 1; }
};

}  // namespace bellows::fabric
