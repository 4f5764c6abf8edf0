#pragma once
// What a link (a connection between two processes or hosts that carries many channels) tells
// the reactor-side object of one channel. Providers call these from the reactor's thread.

#include <bellows/tier.hpp>

#include "fabric/provider.hpp"

#include <cstdint>
#include <system_error>
#include <vector>

namespace bellows::fabric {

class channel_endpoint {
 public:
  /// The peer rang this channel's doorbell: its ring or control block has something new.
  virtual void on_doorbell() = 0;
  /// The peer detached the channel: it will not write into our memory any more.
  virtual void on_peer_detached() = 0;
  /// The link died (peer process gone, socket closed, protocol broken).
  virtual void on_link_failed(std::error_code ec) = 0;

 protected:
  ~channel_endpoint() = default;
};

/// What both sides agreed on when a channel was opened: this side's registered control block
/// and first receive ring, where the peer's are, and the channel's tier table (the opener's).
struct channel_setup {
  std::uint32_t local_id = 0;
  std::uint32_t peer_id = 0;
  region control;
  region ring;
  remote_address peer_control;
  remote_address peer_ring;
  std::uint64_t peer_window_key = 0;
  std::uint64_t peer_window_begin = 0;
  std::uint64_t peer_window_end = 0;
  bool peer_window_any_key = false;
  std::vector<tier> tiers;
  std::uint64_t max_message_size = 0;
};

}  // namespace bellows::fabric
