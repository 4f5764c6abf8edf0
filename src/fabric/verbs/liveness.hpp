#pragma once
// How rdma:// notices a silent peer (context_options::peer_timeout). A write the peer's device
// does not acknowledge is retried by RC and then fails the queue pair, so two things suffice:
// an acknowledgement timeout short enough that the retries give up within two thirds of it, and,
// while a channel waits, a zero-byte write from every queue pair that posted nothing lately
// (otherwise a side that only receives has nothing in flight to fail).

#include <rdma/rdma_cma.h>

#include <chrono>

namespace bellows::verbs {

/// How many times RC resends an unacknowledged write before it fails the queue pair.
inline constexpr unsigned retry_count = 6;

/// How often a quiet queue pair is probed: a sixth of the timeout (a quiet pair is probed one or
/// two intervals after its last write, and the tries of that probe take two thirds at most);
/// zero for never.
std::chrono::milliseconds probe_interval(std::chrono::milliseconds peer_timeout) noexcept;
/// The acknowledgement timeout, as the exponent IB uses (4.096 us << exponent a try), whose
/// tries (the first and `retry_count` more) all end within two thirds of `peer_timeout`: at least 14
/// (67 ms a try, so a busy peer is not taken for a dead one), at most 19 (2.1 s, what rdma_cm
/// itself chooses on RoCE under Linux 6.1, so a lost packet never waits longer than without it).
unsigned ack_timeout_exponent(std::chrono::milliseconds peer_timeout) noexcept;
/// Sets `id`'s acknowledgement timeout for `peer_timeout`, before its connect or accept; zero
/// leaves rdma_cm's.
void limit_silence(rdma_cm_id* id, std::chrono::milliseconds peer_timeout) noexcept;

}  // namespace bellows::verbs
