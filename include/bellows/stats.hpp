#pragma once
// Counters of a channel and of a whole context.

#include <cstddef>
#include <cstdint>
#include <vector>

namespace bellows {

struct channel_stats {
  std::uint32_t send_tier = 0;     ///< tier of the peer's ring this side writes into
  std::uint32_t receive_tier = 0;  ///< tier of this side's current receive ring
  /// Memory this side registered for the channel: control block plus every receive ring it
  /// still holds (a retired ring stays until the application released its last frame).
  std::size_t registered_bytes = 0;
  std::vector<std::size_t> registered_bytes_by_tier;  ///< receive rings only, indexed by tier
  std::uint64_t enlargements = 0;                     ///< granted enlargements of the sending direction
  std::uint64_t shrinks = 0;                          ///< granted shrinks of the sending direction
  std::uint64_t denials = 0;                          ///< enlargements or shrinks the peer denied
  std::uint64_t ack_timeouts = 0;
  std::uint64_t messages_sent = 0;
  std::uint64_t bytes_sent = 0;
  std::uint64_t messages_received = 0;
  std::uint64_t bytes_received = 0;
  /// Doorbells this side rang for the peer, and those it skipped because the peer's reactor
  /// said it polls the channel on every round anyway (shm only).
  std::uint64_t doorbells_rung = 0;
  std::uint64_t doorbells_skipped = 0;
};

struct context_stats {
  std::size_t channels = 0;
  /// shm: one per peer process; rdma: one queue pair per channel.
  std::size_t links = 0;
  std::size_t registered_bytes = 0;
  std::size_t registered_memory_budget = 0;
  std::vector<std::size_t> registered_bytes_by_tier;
  std::uint64_t enlargements = 0;
  std::uint64_t shrinks = 0;
  std::uint64_t denials = 0;
  std::uint64_t messages_sent = 0;
  std::uint64_t bytes_sent = 0;
  std::uint64_t messages_received = 0;
  std::uint64_t bytes_received = 0;
};

}  // namespace bellows
