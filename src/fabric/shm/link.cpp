#include "fabric/shm/link.hpp"

#include "fabric/shm/bulk_copy.hpp"
#include "proto/tier_table.hpp"
#include "proto/wire.hpp"

#include <bellows/error.hpp>

#include <fcntl.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <sys/un.h>
#include <unistd.h>
#include <algorithm>
#include <cerrno>
#include <cstring>
#include <random>

namespace bellows::shm {

static_assert(doorbell::bytes <= arena::header_bytes, "the doorbell ring lives in the arena header");
namespace {

constexpr std::size_t max_fds = 2;

std::error_code last_error() { return {errno, std::system_category()}; }

sockaddr_un abstract_address(const std::string& name, socklen_t& length) {
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  const std::string path = socket_name(name);
  std::memcpy(addr.sun_path, path.data(), path.size());
  length = static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + path.size());
  return addr;
}

/// The kernel's word on who connected: refused unless it is our user (or others are allowed).
proto::outcome<bellows::endpoint> check_peer(int fd, const link_options& options) {
  ucred cred{};
  socklen_t len = sizeof cred;
  if (::getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) != 0) return last_error();
  if (!options.allow_other_users && cred.uid != ::geteuid()) return std::make_error_code(std::errc::permission_denied);
  bellows::endpoint who;
  who.provider = "shm";
  who.pid = cred.pid;
  who.uid = cred.uid;
  return who;
}

/// Whether this process may read `pid`'s memory with process_vm_readv. The kernel checks the
/// permission (same credentials, Yama's ptrace scope, the peer being dumpable) before it looks
/// at the addresses, so a one-byte read at address 0 fails with EFAULT when allowed.
bool may_read_memory_of(std::int64_t pid) {
  if (pid <= 0) return false;  // in a pid namespace we cannot see
  std::byte probe{};
  iovec local{&probe, 1};
  iovec remote{nullptr, 1};
  return ::process_vm_readv(static_cast<pid_t>(pid), &local, 1, &remote, 1, 0) < 0 && errno == EFAULT;
}

std::uint64_t random_key() {
  std::random_device rd;
  return (std::uint64_t{rd()} << 32 | rd()) | 1;
}

}  // namespace

std::string socket_name(const std::string& name) { return std::string(1, '\0') + "bellows.shm." + name; }

link::link(const asio::any_io_executor& io, int fd, arena local, const link_options& options)
    : socket_(std::in_place, io, fd), arena_(std::move(local)), local_key_(random_key()), options_(options) {}

link::~link() {
  if (peer_wake_fd_ >= 0) ::close(peer_wake_fd_);
  for (int fd : hello_fds_)
    if (fd >= 0) ::close(fd);
}

proto::outcome<std::shared_ptr<link>> link::connect(const asio::any_io_executor& io, const std::string& name,
                                                    const link_options& options, memory_budget& budget) {
  if (name.empty() || socket_name(name).size() > sizeof(sockaddr_un::sun_path))
    return make_error_code(error::invalid_argument);
  auto local = arena::create(options.arena_bytes, budget);
  if (!local) return local.failure();
  const int fd = ::socket(AF_UNIX, SOCK_SEQPACKET | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) return last_error();
  socklen_t length = 0;
  const sockaddr_un addr = abstract_address(name, length);
  // Connecting to a listening Unix socket completes at once or not at all.
  if (::connect(fd, reinterpret_cast<const sockaddr*>(&addr), length) != 0) {
    auto ec = last_error();
    ::close(fd);
    return ec;
  }
  auto who = check_peer(fd, options);
  if (!who) {
    ::close(fd);
    return who.failure();
  }
  std::shared_ptr<link> l(new link(io, fd, std::move(*local), options));
  l->peer_endpoint_ = std::move(*who);
  l->name_ = name;
  l->start_handshake();
  return l;
}

proto::outcome<std::shared_ptr<link>> link::accept(const asio::any_io_executor& io, int fd, const link_options& options,
                                                   memory_budget& budget) {
  auto who = check_peer(fd, options);
  if (!who) {
    ::close(fd);
    return who.failure();
  }
  auto local = arena::create(options.arena_bytes, budget);
  if (!local) {
    ::close(fd);
    return local.failure();
  }
  std::shared_ptr<link> l(new link(io, fd, std::move(*local), options));
  l->peer_endpoint_ = std::move(*who);
  l->start_handshake();
  return l;
}

void link::start_handshake() {
  fabric::link_message hello;
  hello.kind = fabric::message_kind::hello;
  hello.value = arena_.memory().size();
  hello.key = local_key_;
  if (peer_endpoint_.pid && may_read_memory_of(*peer_endpoint_.pid)) {
    readable_peer_pid_ = static_cast<int>(*peer_endpoint_.pid);
    hello.second |= fabric::hello_reads_peer_memory;
  }
  std::vector<int> fds{::dup(arena_.memory().fd()), ::dup(options_.wake_fd)};
  if (fds[0] < 0 || fds[1] < 0) {
    const std::error_code ec(errno, std::system_category());
    for (int fd : fds)
      if (fd >= 0) ::close(fd);
    return fail(ec);
  }
  outgoing_.push_back({hello, std::move(fds)});
  flush_outgoing();
}

void link::arm() {
  armed_ = true;
  if (state_ == state::failed) return;
  read_messages();
  flush_outgoing();
}

void link::shutdown() {
  if (state_ != state::failed) state_ = state::failed;
  socket_.reset();
  arena_.leave_budget();  // the reactor, and its budget, go before the channels that hold this link
}

void link::disarm() {
  armed_ = false;
  if (!socket_ || (!reading_ && !writing_)) return;
  asio::error_code ignored;
  socket_->cancel(ignored);
}

void link::transmit(const fabric::link_message& m) {
  outgoing_.push_back({m, {}});
  flush_outgoing();
}

void link::flush_outgoing() {
  while (!outgoing_.empty() && !writing_ && state_ != state::failed) {
    outgoing& o = outgoing_.front();
    iovec iov{&o.message, sizeof o.message};
    msghdr msg{};
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int) * max_fds)] = {};
    if (!o.fds.empty()) {
      msg.msg_control = control;
      msg.msg_controllen = CMSG_SPACE(sizeof(int) * o.fds.size());
      cmsghdr* c = CMSG_FIRSTHDR(&msg);
      c->cmsg_level = SOL_SOCKET;
      c->cmsg_type = SCM_RIGHTS;
      c->cmsg_len = CMSG_LEN(sizeof(int) * o.fds.size());
      std::memcpy(CMSG_DATA(c), o.fds.data(), sizeof(int) * o.fds.size());
    }
    const ssize_t n = ::sendmsg(socket_->native_handle(), &msg, MSG_DONTWAIT | MSG_NOSIGNAL);
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
      writing_ = true;
      socket_->async_wait(asio::posix::descriptor_base::wait_write, [self = self()](std::error_code ec) {
        self->writing_ = false;
        if (!ec || self->armed_) self->flush_outgoing();
      });
      return;
    }
    if (n < 0) return fail(make_error_code(error::connection_reset));
    for (int fd : o.fds) ::close(fd);
    outgoing_.pop_front();
  }
}

namespace {

/// The kernel also cuts the descriptors off a message when this process is at its limit; only
/// then is a cut message our problem rather than a lying peer's.
bool out_of_descriptors() {
  const int probe = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
  if (probe >= 0) ::close(probe);
  return probe < 0 && (errno == EMFILE || errno == ENFILE);
}

}  // namespace

void link::read_messages() {
  read_queued();
  // A wait still out (perhaps cancelled by disarm(), its handler not yet run) reads again when
  // it ends. Reading now regardless matters: an arm() that found only that stale wait would
  // otherwise read nothing, and a peer's death could go unnoticed until the next arm.
  if (state_ == state::failed || reading_) return;
  reading_ = true;
  socket_->async_wait(asio::posix::descriptor_base::wait_read, [self = self()](std::error_code) {
    self->reading_ = false;
    if (self->armed_) self->read_messages();
  });
}

void link::last_look() {
  // The socket is not watched while the reactor is idle: a peer that died while the reactor was
  // busy (its EOF not yet seen by epoll) would otherwise go unnoticed by a channel that just
  // finished writing to it, until its next operation.
  if (socket_) read_queued();
}

void link::read_queued() {
  if (state_ == state::failed) return;
  // Everything the socket holds is read before any of it is handled, so that an open and its
  // withdrawal that waited together (nobody accepted meanwhile) cancel out: the acceptor never
  // sees a channel its opener already gave up on.
  std::vector<fabric::link_message> batch;
  for (;;) {
    fabric::link_message m;
    iovec iov{&m, sizeof m};
    msghdr msg{};
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int) * max_fds)] = {};
    msg.msg_control = control;
    msg.msg_controllen = sizeof control;
    const ssize_t n = ::recvmsg(socket_->native_handle(), &msg, MSG_DONTWAIT | MSG_CMSG_CLOEXEC);
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) break;
    if (n <= 0) {
      // What the peer sent before it went counts (an accept, a refusal), as on a socket.
      handle_batch(batch);
      return fail(make_error_code(error::connection_reset));
    }
    std::vector<int> fds;
    for (cmsghdr* c = CMSG_FIRSTHDR(&msg); c != nullptr; c = CMSG_NXTHDR(&msg, c)) {
      if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) continue;
      const std::size_t count = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
      for (std::size_t i = 0; i < count; ++i) {
        int fd;
        std::memcpy(&fd, CMSG_DATA(c) + i * sizeof(int), sizeof fd);
        fds.push_back(fd);
      }
    }
    const bool whole = static_cast<std::size_t>(n) == sizeof m && (msg.msg_flags & (MSG_TRUNC | MSG_CTRUNC)) == 0;
    if (whole && m.magic == fabric::link_magic && m.version == fabric::link_version) {
      // Only a hello carries descriptors; any others are the peer's mistake and closed here.
      if (m.kind == fabric::message_kind::hello && hello_fds_.empty()) {
        hello_fds_ = std::move(fds);
      } else {
        for (int fd : fds) ::close(fd);
      }
      batch.push_back(m);
      continue;
    }
    for (int fd : fds) ::close(fd);
    if ((msg.msg_flags & MSG_CTRUNC) != 0 && out_of_descriptors()) {
      handle_batch(batch);
      return fail(std::make_error_code(std::errc::too_many_files_open));
    }
    handle_batch(batch);
    return fail(make_error_code(error::protocol_violation));
  }
  handle_batch(batch);
}

void link::on_hello(const fabric::link_message& m) {
  if (hello_fds_.size() != 2 || m.value <= arena::header_bytes || m.key == 0)
    return fail(make_error_code(error::protocol_violation));
  auto mapped = mapping::adopt(std::exchange(hello_fds_[0], -1), m.value);
  if (!mapped) return fail(mapped.failure());
  peer_ = std::move(*mapped);
  peer_key_ = m.key;
  peer_fetches_ = (m.second & fabric::hello_reads_peer_memory) != 0;
  peer_window_begin_ = arena::header_bytes;
  peer_window_end_ = peer_.size();
  peer_wake_fd_ = std::exchange(hello_fds_[1], -1);
  hello_fds_.clear();
  become_ready();
}

void link::fail(std::error_code ec) {
  if (state_ == state::failed) return;
  asio::error_code ignored;
  if (socket_) socket_->close(ignored);
  for (auto& o : outgoing_)
    for (int fd : o.fds) ::close(fd);
  outgoing_.clear();
  for (int fd : hello_fds_)
    if (fd >= 0) ::close(fd);
  hello_fds_.clear();
  fail_channels(ec);
}

}  // namespace bellows::shm
