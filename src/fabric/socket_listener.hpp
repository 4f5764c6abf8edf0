#pragma once
// A listening socket (shm's abstract Unix socket, tcp's) that takes connections while someone
// wants peers and hands each to the provider, which makes it a link. At the descriptor limit it
// turns pending connections away at once instead of leaving their peers waiting.

#include "fabric/connector.hpp"

#include <asio/posix/stream_descriptor.hpp>

#include <functional>
#include <memory>

namespace bellows::fabric {

class socket_listener final : public listener, public std::enable_shared_from_this<socket_listener> {
 public:
  /// Takes a connected, non-blocking descriptor and makes a link of it (or closes it).
  using adopt_function = std::function<void(int fd)>;

  /// `fd`: a bound, listening, non-blocking socket, now owned here.
  socket_listener(const host& h, int fd, adopt_function adopt);
  ~socket_listener() override;

  void want_peers(bool on) override;
  /// Takes the connections waiting now, whether or not anyone wants peers: a tcp link's second
  /// connection (tcp/link_directions.cpp) is no new peer.
  void take_waiting();

 private:
  void accept_links();
  /// Spends the spare descriptor to take one pending connection and close it, so that its
  /// peer's connect fails. False if none was waiting.
  bool turn_away_one();

  asio::posix::stream_descriptor socket_;
  adopt_function adopt_;
  int spare_fd_ = -1;
  bool wanted_ = false;
  bool waiting_ = false;
};

}  // namespace bellows::fabric
