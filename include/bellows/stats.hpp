#pragma once
// Counters of a channel and of a whole context.

#include <cstddef>
#include <cstdint>
#include <vector>

namespace bellows {

/// One side of one channel: where it stands and what it has done (channel::stats()).
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
  /// Enlargements whose answer did not come within ack_timeout (the send went on in fragments).
  std::uint64_t ack_timeouts = 0;
  std::uint64_t messages_sent = 0;      ///< sends completed without error, try_send's included
  std::uint64_t bytes_sent = 0;         ///< their bytes
  std::uint64_t messages_received = 0;  ///< messages delivered to a receive
  std::uint64_t bytes_received = 0;     ///< their bytes
  /// Sends whose bytes went straight into the peer's posted receive buffer rather than through
  /// its ring: messages larger than the largest tier's frames, written into the buffer the
  /// receive lent (tcp, rdma) or read from our memory by the peer (shm, where it may).
  std::uint64_t direct_messages_sent = 0;
  /// Messages that arrived that way, straight into a receive's buffer.
  std::uint64_t direct_messages_received = 0;
  /// Doorbells this side rang for the peer (shm: a store into the peer's doorbell ring; rdma:
  /// an RDMA WRITE WITH IMMEDIATE).
  std::uint64_t doorbells_rung = 0;
  /// Doorbells this side skipped because the peer's reactor said it polls the channel on every
  /// round anyway (shm only).
  std::uint64_t doorbells_skipped = 0;
  /// Times this side's sends stopped because the peer's ring had no room left for the next
  /// one, until the peer's reactor returned credit for what it had read: a sender outrunning
  /// its receiver. One that keeps doing so asks for a larger ring (growth for throughput), after
  /// which a receiver that keeps up leaves few of these. (try_send does not wait: it says
  /// send_status::no_credits instead.)
  std::uint64_t credit_stalls = 0;
};

/// Every open channel of one io_context together, and its registered memory (bellows::stats(io)).
/// Channels closed before the call no longer count.
struct context_stats {
  std::size_t channels = 0;  ///< open channels (accepted or connected, not yet destroyed)
  /// shm: one per peer process; rdma: one queue pair per channel.
  std::size_t links = 0;
  std::size_t registered_bytes = 0;                   ///< registered memory in use, as the budget counts it
  std::size_t registered_memory_budget = 0;           ///< context_options::registered_memory_budget
  std::vector<std::size_t> registered_bytes_by_tier;  ///< receive rings only, indexed by tier
  std::uint64_t enlargements = 0;                     ///< the channels' channel_stats::enlargements, summed
  std::uint64_t shrinks = 0;                          ///< summed likewise
  std::uint64_t denials = 0;                          ///< summed likewise
  std::uint64_t messages_sent = 0;                    ///< summed likewise
  std::uint64_t bytes_sent = 0;                       ///< summed likewise
  std::uint64_t messages_received = 0;                ///< summed likewise
  std::uint64_t bytes_received = 0;                   ///< summed likewise
};

}  // namespace bellows
