#pragma once
// What a channel reports when one of its directions changes tier, for monitoring and demos.

#include <chrono>
#include <cstdint>

namespace bellows {

/// One tier change of one side of a channel (channel_options::on_tier_event). "This side" is
/// the side whose handler is called: `requested`, `granted`, `denied` and `timed_out` concern
/// its sending direction, `provisioned` and `refused` its receiving one.
struct tier_event {
  /// What happened.
  enum class what {
    requested,    ///< this side asked the peer for another receive ring (ENLARGE_REQ or SHRINK_REQ)
    granted,      ///< the peer's acknowledgement arrived; this side now sends on `to_tier`
    denied,       ///< the peer's budget was short; large messages are fragmented instead
    timed_out,    ///< no acknowledgement within ack_timeout: sends go on in fragments through the
                  ///< current ring; the request stays outstanding and a late grant is honoured
    provisioned,  ///< the peer asked; this side registered a receive ring of `to_tier` and acknowledged
    refused,      ///< the peer asked; this side's memory budget was short and it answered denied
  };
  what kind = what::requested;  ///< what happened
  bool shrink = false;          ///< a shrink (back to a smaller tier) rather than an enlargement
  std::uint32_t from_tier = 0;  ///< the tier the direction was on
  std::uint32_t to_tier = 0;    ///< the tier asked for
  /// Size of the message that made the sender ask; zero for a shrink, and for an enlargement
  /// for throughput (a sender that keeps running out of credit asks for the next tier, where
  /// its messages take two or more slots of the current ring).
  std::uint64_t message_bytes = 0;
  /// For granted and denied: from the request's write to the moment this side took the
  /// acknowledgement in (not counting the waiting message's own copy); for timed_out, to the
  /// timeout. For provisioned and refused: the time spent registering the ring and writing the
  /// answer.
  std::chrono::nanoseconds elapsed{0};
};

}  // namespace bellows
