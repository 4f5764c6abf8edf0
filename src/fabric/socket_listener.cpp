#include "fabric/socket_listener.hpp"

#include <asio/error.hpp>

#include <fcntl.h>
#include <sys/socket.h>
#include <unistd.h>
#include <cerrno>

namespace bellows::fabric {
namespace {

int accept_one(int listener) { return ::accept4(listener, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC); }

}  // namespace

socket_listener::socket_listener(const host& h, int fd, adopt_function adopt)
    : socket_(h.executor, fd), adopt_(std::move(adopt)) {
  spare_fd_ = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
}

socket_listener::~socket_listener() {
  if (spare_fd_ >= 0) ::close(spare_fd_);
}

void socket_listener::want_peers(bool on) {
  wanted_ = on;
  if (on) return accept_links();
  asio::error_code ignored;
  if (waiting_) socket_.cancel(ignored);
}

void socket_listener::accept_links() {
  if (waiting_ || !wanted_ || !socket_.is_open()) return;
  while (wanted_) {
    const int fd = accept_one(socket_.native_handle());
    // At the limit accept fails with EMFILE whether or not anyone is waiting.
    if (fd < 0 && (errno == EMFILE || errno == ENFILE) && spare_fd_ >= 0) {
      if (turn_away_one()) continue;
      break;
    }
    if (fd < 0) break;
    adopt_(fd);
  }
  // A link adopted above may already have opened the channel its acceptor waited for, and
  // nobody may want peers any more: then nothing waits (the wait would be work forever).
  if (!wanted_) return;
  // EAGAIN, or a transient failure: either way, wait for the next connection.
  waiting_ = true;
  socket_.async_wait(asio::posix::descriptor_base::wait_read, [weak = weak_from_this()](std::error_code ec) {
    auto self = weak.lock();
    if (!self) return;
    self->waiting_ = false;
    // A wait cancelled because nobody accepted may meet an accept started since: look again
    // (accept_links does nothing unless someone wants peers).
    if (!ec || ec == asio::error::operation_aborted) self->accept_links();
  });
}

void socket_listener::take_waiting() {
  if (!socket_.is_open()) return;
  // Bounded: a flood of connections waits for the acceptor like any other.
  constexpr int at_most = 16;
  for (int i = 0; i < at_most; ++i) {
    const int fd = accept_one(socket_.native_handle());
    if (fd < 0) return;
    adopt_(fd);
  }
}

bool socket_listener::turn_away_one() {
  ::close(spare_fd_);
  const int fd = accept_one(socket_.native_handle());
  if (fd >= 0) ::close(fd);
  spare_fd_ = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
  return fd >= 0;
}

}  // namespace bellows::fabric
