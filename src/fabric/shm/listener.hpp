#pragma once
// The listening side of shm://NAME: an abstract SOCK_SEQPACKET socket. Abstract names vanish
// with the process, so a crashed server leaves nothing behind to clean up.

#include "proto/outcome.hpp"

#include <string>

namespace bellows::shm {

/// A non-blocking listening socket for `name`; std::errc::address_in_use when taken.
proto::outcome<int> listen_on(const std::string& name);
/// Accepts one pending connection; -1 with errno EAGAIN when there is none.
int accept_one(int listener);

}  // namespace bellows::shm
