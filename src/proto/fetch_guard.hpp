#pragma once
// The word a sender bumps before it lets go of a buffer it offered for fetching (see
// fetch_note in proto/wire.hpp). There is one per process and it is never freed: the peer may
// read it at any time, even after the channel that made the offer is gone, and must then find
// a changed value, never memory given to something else.

#include <cstdint>

namespace bellows::proto::fetch_guard {

struct snapshot {
  std::uint64_t address = 0;
  std::uint64_t value = 0;
};

/// Where the word is and what it holds now: what an offer names.
snapshot current() noexcept;

/// Fails the check of every fetch whose offer was made before this call. Called before an
/// offered send completes any way other than with the receiver's `received`; the bump is
/// globally visible before the call returns, so before the application may touch the buffer.
/// Offers of other channels fail their checks too: those receivers decline, and their
/// messages come through the ring instead (slower, never wrong).
void withdraw() noexcept;

}  // namespace bellows::proto::fetch_guard
