#pragma once
// The measurements of bellows-perf, run against a peer (peer.hpp) listening on a URI.

#include "report.hpp"

#include <bellows/channel.hpp>
#include <bellows/options.hpp>

#include <asio/awaitable.hpp>

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace perf {

struct settings {
  std::vector<std::string> modes{"lat", "bw"};
  std::vector<std::uint64_t> sizes;  ///< empty: each mode's default sweep
  std::uint64_t iterations = 0;      ///< 0: chosen per size (see iterations_for)
  std::uint64_t warmup = 1000;
  std::vector<std::uint64_t> channel_counts{0, 1000};  ///< scale: idle channels beside the active ones
  std::uint64_t active = 1;                            ///< scale: channels measuring 8 B latency
  std::uint64_t outstanding = 1;                       ///< bw: sends in flight at once
  /// Start every channel at 256 KiB, as rsocket and eager-RDMA MPI do, to compare against.
  bool fixed_large = false;
  /// A tier table of the measuring side's own (it governs both directions); empty: the default.
  std::vector<bellows::tier> tiers;
  /// bw: the peer takes each message with async_receive_view instead of into its buffer.
  bool view = false;
  /// bw: each of the peer's posted receives has a buffer of its own; by default all share one,
  /// as ucx_perftest's receiver does.
  bool buffer_per_receive = false;
  bool json = false;
  std::size_t max_message = std::size_t{4} << 20;  ///< the peer's receive buffer
  /// The forked (or --serve) peer's registered_memory_budget; herd uses it to force denials.
  std::size_t peer_budget = SIZE_MAX;
  /// Both sides' channel_options::one_copy_above; empty: the provider's default.
  std::optional<std::uint64_t> one_copy_above;
};

/// Opens a channel and tells the peer its role (see peer.hpp).
asio::awaitable<bellows::channel> open(const std::string& uri, const bellows::channel_options& options,
                                       const std::string& role);

struct process_report {
  double idle = 0, registered = 0, rss = 0, peak_rss = 0;
};
/// What the peer process holds now (and its peak resident size so far).
asio::awaitable<process_report> peer_report(const std::string& uri, const settings& s);

/// herd: every one of N fresh channels sends one message that needs the largest tier, all at
/// the same moment; wall time, peak memory and registered bytes on both sides.
asio::awaitable<void> herd(const std::string& uri, const settings& s, reporter& out);

/// local: both ends of an shm channel in this process, on the measuring thread, streaming:
/// the software cost per message of sender and receiver together, with no cache line
/// crossing cores and none of the two-process run's noise (ignores the peer and --uri).
asio::awaitable<void> local(const settings& s, reporter& out);

/// The tier table the client asks for (the connecting side's table governs the channel).
bellows::channel_options channel_options_for(const settings& s);

/// Runs every mode of `s` against `uri`, printing as it goes. Throws on a failed operation.
asio::awaitable<void> measure(std::string uri, settings s);

}  // namespace perf
