#pragma once
// Options of a channel and of the bellows context of an io_context.

#include <bellows/tier.hpp>
#include <bellows/tier_event.hpp>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

namespace bellows {

/// Options of one channel, given to async_connect or to the acceptor (for the channels it
/// accepts). Each side's timing options govern its own side.
struct channel_options {
  /// Ring sizes, ascending; every channel starts on the first. The connecting side's table
  /// governs both directions of the channel.
  std::vector<tier> tiers = default_tiers();
  /// How long a send that does not fit the current ring's free room waits for the
  /// acknowledgement of an enlargement before it goes on in fragments through the current ring
  /// (a late acknowledgement still moves it to the larger).
  std::chrono::nanoseconds ack_timeout = std::chrono::seconds(1);
  /// Shrink back to the first tier after this long without a message that needed more, and,
  /// for a ring grown for throughput, without traffic that would overflow the first ring.
  std::chrono::nanoseconds idle_shrink_after = std::chrono::seconds(5);
  /// After a denied enlargement, large messages are fragmented without asking again this long.
  std::chrono::nanoseconds retry_after_denial = std::chrono::milliseconds(100);
  /// How long async_connect waits for the peer to accept before it completes with
  /// asio::error::timed_out and withdraws the request. Zero: no limit. Acceptors ignore it.
  /// Like an Asio timer, the limit is a timer on the reactor: a reactor held up past the limit
  /// may first find the connection complete, and then the connect succeeds late rather than
  /// failing a channel that is up.
  std::chrono::nanoseconds connect_timeout = std::chrono::seconds(10);
  /// Largest message this side accepts; a larger one breaks the channel with protocol_violation.
  std::uint64_t max_message_size = std::uint64_t{1} << 32;
  /// This side's sends longer than this go in one copy, from the send's buffer straight into
  /// the peer's posted receive buffer, instead of through the rings; never a message that fits
  /// the largest tier's frames, and only one the peer's receive can take whole (one contiguous
  /// buffer, not a view), else it comes through the rings after all. UINT64_MAX: never.
  ///
  /// Unset, each provider's measured best: over tcp:// and rdma:// every message above the
  /// largest tier's frames (the receiver's kernel or NIC places the bytes: one copy instead of
  /// two); over shm:// none, because there the one copy is the receiver's `process_vm_readv`,
  /// which on the machines measured runs at half memcpy's speed, while the ring's two copies run
  /// on both processes' cores at once (README, Where the time goes, "Large messages").
  std::optional<std::uint64_t> one_copy_above;
  /// A secret both ends must hold (any bytes; use 32 random ones). When set, a tcp:// or rdma://
  /// channel is handed to the application only after both sides proved they hold it
  /// (HMAC-SHA256 over fresh nonces from both); a peer with another key, or none, or one where
  /// this side has none, is refused with error::authentication_failed and costs the acceptor no
  /// registered memory (over rdma: a queue pair until the opener's proof has been checked). The
  /// acceptor's key covers every connection to it; tcp connections with different keys are not
  /// shared. shm:// ignores it (the peer's uid is checked instead).
  std::string pre_shared_key;
  /// Called for every tier change of this side of the channel, posted to the channel's
  /// executor like a completion handler, so it may use the channel. Empty: nothing is reported.
  std::function<void(const tier_event&)> on_tier_event;
};

/// Settings shared by every channel of one io_context; set them before the first channel.
struct context_options {
  /// Bytes of registered memory (rings and control blocks) all channels together may hold;
  /// enlargements past it are denied and the message is fragmented instead.
  std::size_t registered_memory_budget = SIZE_MAX;
  /// Accept shm peers running as another user (by default only the same uid).
  bool allow_other_users = false;
  /// How long the reactor keeps polling after the last activity before it sleeps on its eventfd.
  std::chrono::nanoseconds spin_before_sleep = std::chrono::microseconds(50);
  /// Released shm rings kept resident and zeroed, so that the next enlargement finds its pages
  /// present on both sides instead of faulting them in. Beyond this, released memory goes back
  /// to the system at once (as it does under budget pressure).
  std::size_t warm_ring_bytes = std::size_t{32} << 20;
  /// Virtual size of each shm arena (sparse: only what is registered is backed by memory).
  std::size_t shm_arena_bytes = std::size_t{16} << 30;
  /// How long a peer may stay silent before it counts as dead and every channel over its
  /// connection fails with connection_reset. The same for every connection of the io_context.
  ///  - tcp://: sent data left unacknowledged (TCP_USER_TIMEOUT) and an idle connection
  ///    (keepalive probes from half this time on, every sixth of it) are both bounded: a dead
  ///    link or peer is noticed within this plus a sixth of it (at least a second more), and a
  ///    connect to a host that does not answer gives up after it. Whole seconds, at least one.
  ///    Zero keeps the kernel's defaults: about 15 minutes with data in flight, never when idle.
  ///  - rdma://: while a channel has an operation pending, a queue pair that posted nothing for a
  ///    sixth of this time posts a zero-byte write, which the peer's device must acknowledge;
  ///    the acknowledgement timeout is set so that RC's seven tries give up within two thirds
  ///    of it (at least 67 ms and at most 2.1 s a try). A dead peer or link is noticed within
  ///    this time (below 0.7 s: within a third of it plus 0.47 s). Zero sends no probes and
  ///    keeps rdma_cm's timeout (2.1 s a try on RoCE): a peer that dies while this side only
  ///    waits for a message is never noticed. A peer on this host (rdma_cm routed it to one
  ///    of this host's own addresses) is never probed: its kernel disconnects the queue pair
  ///    as soon as its process ends, and the host cannot die under this process.
  std::chrono::milliseconds peer_timeout = std::chrono::seconds(15);
};

}  // namespace bellows
