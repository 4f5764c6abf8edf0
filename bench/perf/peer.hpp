#pragma once
// The side of bellows-perf that answers. Every channel a client opens begins with one text
// message naming its role, so one listening peer serves every mode, in any order, without
// being told the client's settings:
//   "pong"     answers every message with one of its size, from a buffer this side never
//              writes, as ucx_perftest's ping-pong does (lat, and the active channels of
//              scale). Sending back the bytes just received would time something else: at
//              1 MiB their cache lines are dirty in this core, and the other side's copy
//              pulls them across, 1.7x the half round trip on the development VM.
//   "sink N D B"  receives N messages, D receives posted at once into B buffers (D and B default
//              to 1), then answers one byte (bw, rate)
//   "view-sink N"  the same with async_receive_view (bw --view)
//   "enlarge"  receives one message, answers the nanoseconds this side spent provisioning
//              the ring it needed (enlarge)
//   "herd N"   receives one message of N bytes, answers 8 bytes (herd)
//   "idle"     only waits for the close (the idle channels of scale)
//   "report"   answers "idle=I registered=R rss=S peak_rss=P" for this process (scale, herd)
// Messages are received into a buffer of `max_message` bytes, copied out as ucx_perftest's
// receives are, not read in place.

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>

namespace perf {

/// Listens on `uri` and serves until killed. Writes one byte to `ready_fd` (when not -1)
/// once listening. `one_copy_above` is the channels' channel_options::one_copy_above.
int run_peer(const std::string& uri, std::size_t max_message, std::size_t budget,
             std::optional<std::uint64_t> one_copy_above, int ready_fd);

}  // namespace perf
