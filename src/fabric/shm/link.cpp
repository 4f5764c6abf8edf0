#include "fabric/shm/link.hpp"

#include "fabric/shm/bulk_copy.hpp"
#include "proto/tier_table.hpp"
#include "proto/wire.hpp"

#include <bellows/error.hpp>

#include <fcntl.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
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

std::error_code check_peer(int fd, const link_options& options) {
  ucred cred{};
  socklen_t len = sizeof cred;
  if (::getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) != 0) return last_error();
  if (!options.allow_other_users && cred.uid != ::geteuid()) return std::make_error_code(std::errc::permission_denied);
  return {};
}

std::uint64_t random_key() {
  std::random_device rd;
  return (std::uint64_t{rd()} << 32 | rd()) | 1;
}

}  // namespace

std::string socket_name(const std::string& name) { return std::string(1, '\0') + "bellows.shm." + name; }

link::link(asio::io_context& io, int fd, arena local, const link_options& options)
    : socket_(std::in_place, io, fd), arena_(std::move(local)), local_key_(random_key()), options_(options) {}

link::~link() {
  if (peer_wake_fd_ >= 0) ::close(peer_wake_fd_);
}

proto::outcome<std::shared_ptr<link>> link::connect(asio::io_context& io, const std::string& name,
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
  if (auto ec = check_peer(fd, options)) {
    ::close(fd);
    return ec;
  }
  std::shared_ptr<link> l(new link(io, fd, std::move(*local), options));
  l->name_ = name;
  l->start_handshake();
  return l;
}

proto::outcome<std::shared_ptr<link>> link::accept(asio::io_context& io, int fd, const link_options& options,
                                                   memory_budget& budget) {
  if (auto ec = check_peer(fd, options)) {
    ::close(fd);
    return ec;
  }
  auto local = arena::create(options.arena_bytes, budget);
  if (!local) {
    ::close(fd);
    return local.failure();
  }
  std::shared_ptr<link> l(new link(io, fd, std::move(*local), options));
  l->start_handshake();
  return l;
}

void link::set_hooks(accept_hook on_accept, failure_hook on_failure) {
  on_accept_ = std::move(on_accept);
  on_failure_ = std::move(on_failure);
}

void link::start_handshake() {
  link_message hello;
  hello.kind = message_kind::hello;
  hello.value = arena_.memory().size();
  hello.key = local_key_;
  std::vector<int> fds{::dup(arena_.memory().fd()), ::dup(options_.wake_fd)};
  if (fds[0] < 0 || fds[1] < 0) {
    const std::error_code ec(errno, std::system_category());
    for (int fd : fds)
      if (fd >= 0) ::close(fd);
    return fail(ec);
  }
  send(hello, std::move(fds));
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

void link::send(link_message m, std::vector<int> fds) {
  if (state_ == state::failed) {
    for (int fd : fds) ::close(fd);
    return;
  }
  if (state_ == state::handshaking && m.kind != message_kind::hello) {
    waiting_for_handshake_.push_back(m);
    return;
  }
  outgoing_.push_back({m, std::move(fds)});
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
      socket_->async_wait(asio::posix::descriptor_base::wait_write, [self = shared_from_this()](std::error_code ec) {
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
  if (reading_ || state_ == state::failed) return;
  for (;;) {
    link_message m;
    iovec iov{&m, sizeof m};
    msghdr msg{};
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int) * max_fds)] = {};
    msg.msg_control = control;
    msg.msg_controllen = sizeof control;
    const ssize_t n = ::recvmsg(socket_->native_handle(), &msg, MSG_DONTWAIT | MSG_CMSG_CLOEXEC);
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) break;
    if (n <= 0) return fail(make_error_code(error::connection_reset));
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
    if (whole && m.magic == link_magic && m.version == link_version) handle(m, fds);
    for (int fd : fds) ::close(fd);  // whatever handle() did not adopt
    if ((msg.msg_flags & MSG_CTRUNC) != 0 && out_of_descriptors())
      return fail(std::make_error_code(std::errc::too_many_files_open));
    if (!whole || m.magic != link_magic || m.version != link_version)
      return fail(make_error_code(error::protocol_violation));
    if (state_ == state::failed) return;
  }
  reading_ = true;
  socket_->async_wait(asio::posix::descriptor_base::wait_read, [self = shared_from_this()](std::error_code) {
    self->reading_ = false;
    if (self->armed_) self->read_messages();
  });
}

void link::handle(const link_message& m, std::vector<int>& fds) {
  if (state_ == state::handshaking && m.kind != message_kind::hello)
    return fail(make_error_code(error::protocol_violation));
  switch (m.kind) {
    case message_kind::hello: return on_hello(m, fds);
    case message_kind::open: return on_open(m);
    case message_kind::accepted: return on_accepted(m);
    case message_kind::refused: return on_refused(m);
    case message_kind::detach: return on_detach(m);
  }
  fail(make_error_code(error::protocol_violation));
}

void link::on_hello(const link_message& m, std::vector<int>& fds) {
  if (state_ != state::handshaking || fds.size() != 2 || m.value <= arena::header_bytes || m.key == 0)
    return fail(make_error_code(error::protocol_violation));
  auto mapped = mapping::adopt(std::exchange(fds[0], -1), m.value);
  if (!mapped) return fail(mapped.failure());
  peer_ = std::move(*mapped);
  peer_key_ = m.key;
  peer_wake_fd_ = std::exchange(fds[1], -1);
  fds.clear();
  state_ = state::ready;
  while (!waiting_for_handshake_.empty()) {
    outgoing_.push_back({waiting_for_handshake_.front(), {}});
    waiting_for_handshake_.pop_front();
  }
  flush_outgoing();
}

std::uint32_t link::allocate_id() {
  if (!free_ids_.empty()) {
    const std::uint32_t id = free_ids_.back();
    free_ids_.pop_back();
    slots_[id - 1] = channel_slot{};
    slots_[id - 1].in_use = true;
    return id;
  }
  slots_.emplace_back().in_use = true;
  return static_cast<std::uint32_t>(slots_.size());
}

proto::outcome<std::uint32_t> link::new_channel_slot(const tier& first) {
  auto control = arena_.allocate(proto::control_block::size);
  if (!control) return control.failure();
  auto ring = arena_.allocate(first.ring_bytes());
  if (!ring) {
    arena_.release(control->handle);
    return ring.failure();
  }
  const std::uint32_t id = allocate_id();
  slots_[id - 1].control = *control;
  slots_[id - 1].ring = *ring;
  return id;
}

link::channel_slot* link::slot(std::uint32_t id) {
  if (id == 0 || id > slots_.size() || !slots_[id - 1].in_use) return nullptr;
  return &slots_[id - 1];
}

void link::free_slot(std::uint32_t id) {
  channel_slot& s = slots_[id - 1];
  for (auto handle : s.graveyard) arena_.release(handle);
  s = channel_slot{};
  free_ids_.push_back(id);
}

bool link::unused() const noexcept {
  // A retired slot only waits for the peer's detach before its memory may be reused; dropping
  // the whole link (and its arena) makes that wait moot.
  return std::all_of(slots_.begin(), slots_.end(),
                     [](const channel_slot& s) { return !s.in_use || (s.retired && !s.opening); });
}

std::uint32_t link::open_channel(const std::vector<tier>& tiers, std::uint64_t max_message_size, open_handler done) {
  auto fail_now = [&](std::error_code ec) {
    done(ec);
    return std::uint32_t{0};
  };
  if (state_ == state::failed) return fail_now(why_failed_);
  if (tiers.empty() || tiers.size() > proto::max_tiers) return fail_now(make_error_code(error::invalid_argument));
  auto allocated = new_channel_slot(tiers[0]);
  if (!allocated) return fail_now(allocated.failure());
  const std::uint32_t id = *allocated;
  channel_slot& s = slots_[id - 1];
  s.opening = std::move(done);
  link_message m;
  m.kind = message_kind::open;
  m.first = id;
  m.control = s.control.address;
  m.ring = s.ring.address;
  m.value = max_message_size;
  m.tier_count = static_cast<std::uint32_t>(tiers.size());
  std::copy(tiers.begin(), tiers.end(), m.tiers);
  send(m);
  return id;
}

void link::cancel_open(std::uint32_t local_id) {
  if (channel_slot* s = slot(local_id)) s->opening.reset();
}

fabric::channel_setup link::setup_for(std::uint32_t id, std::uint32_t peer_id, const link_message& m) const {
  const channel_slot& s = slots_[id - 1];
  fabric::channel_setup setup;
  setup.local_id = id;
  setup.peer_id = peer_id;
  setup.control = s.control;
  setup.ring = s.ring;
  setup.peer_control = {peer_key_, m.control};
  setup.peer_ring = {peer_key_, m.ring};
  setup.peer_window_key = peer_key_;
  setup.peer_window_begin = arena::header_bytes;
  setup.peer_window_end = peer_.size();
  return setup;
}

void link::on_open(const link_message& m) {
  link_message answer;
  answer.first = m.first;
  auto refuse = [&](std::error_code ec) {
    answer.kind = message_kind::refused;
    answer.value = static_cast<std::uint64_t>(ec.value());
    answer.second = ec.category() == bellows::error_category() ? refusal_in_bellows_category : 0;
    send(answer);
  };
  std::vector<tier> tiers(m.tiers, m.tiers + std::min<std::size_t>(m.tier_count, proto::max_tiers));
  if (m.tier_count > proto::max_tiers || !proto::tier_table::make(tiers))
    return refuse(make_error_code(error::invalid_argument));
  auto allocated = new_channel_slot(tiers[0]);
  if (!allocated) return refuse(allocated.failure());
  const std::uint32_t id = *allocated;
  const fabric::region control = slots_[id - 1].control;
  const fabric::region ring = slots_[id - 1].ring;
  fabric::channel_setup setup = setup_for(id, m.first, m);
  setup.tiers = std::move(tiers);
  setup.max_message_size = m.value;
  if (!on_accept_ || !on_accept_(*this, setup)) {
    slots_[id - 1].graveyard = std::vector<std::uint64_t>{control.handle, ring.handle};
    free_slot(id);
    return refuse(std::make_error_code(std::errc::connection_refused));
  }
  answer.kind = message_kind::accepted;
  answer.second = id;
  answer.control = control.address;
  answer.ring = ring.address;
  send(answer);
}

void link::on_accepted(const link_message& m) {
  channel_slot* s = slot(m.first);
  if (s == nullptr || s->endpoint != nullptr || s->retired || m.second == 0)
    return fail(make_error_code(error::protocol_violation));
  if (!s->opening) {
    // Cancelled while the peer was accepting: undo it on both sides.
    send_detach(m.second);
    s->graveyard = {s->control.handle, s->ring.handle};
    s->retired = true;
    return;
  }
  auto done = std::move(*s->opening);
  s->opening.reset();
  auto setup = setup_for(m.first, m.second, m);
  done(std::move(setup));
}

void link::on_refused(const link_message& m) {
  channel_slot* s = slot(m.first);
  if (s == nullptr || s->endpoint != nullptr || s->retired) return fail(make_error_code(error::protocol_violation));
  auto done = std::move(s->opening);
  s->graveyard = {s->control.handle, s->ring.handle};
  free_slot(m.first);
  const int value = static_cast<int>(m.value);
  std::error_code why = std::make_error_code(std::errc::connection_refused);
  if (value != 0 && m.value <= INT32_MAX)
    why = {value, m.second == refusal_in_bellows_category ? bellows::error_category() : std::system_category()};
  if (done) (*done)(why);
}

void link::on_detach(const link_message& m) {
  channel_slot* s = slot(m.first);
  if (s == nullptr || s->peer_detached) return;  // already gone here, or said twice: nothing to do
  s->peer_detached = true;
  if (s->retired) return free_slot(m.first);
  if (s->endpoint != nullptr) s->endpoint->on_peer_detached();
}

void link::attach(std::uint32_t local_id, fabric::channel_endpoint* endpoint) {
  if (channel_slot* s = slot(local_id)) s->endpoint = endpoint;
}

void link::send_detach(std::uint32_t peer_id) {
  link_message m;
  m.kind = message_kind::detach;
  m.first = peer_id;
  send(m);
}

void link::retire(std::uint32_t local_id, std::vector<std::uint64_t> regions) {
  channel_slot* s = slot(local_id);
  if (s == nullptr) {
    for (auto handle : regions) arena_.release(handle);
    return;
  }
  s->endpoint = nullptr;
  s->retired = true;
  s->graveyard = std::move(regions);
  if (s->peer_detached || state_ == state::failed) free_slot(local_id);
}

void link::fail(std::error_code ec) {
  if (state_ == state::failed) return;
  state_ = state::failed;
  why_failed_ = ec;
  asio::error_code ignored;
  if (socket_) socket_->close(ignored);
  for (auto& o : outgoing_)
    for (int fd : o.fds) ::close(fd);
  outgoing_.clear();
  waiting_for_handshake_.clear();
  auto self = shared_from_this();  // hooks may drop the last other reference
  for (std::uint32_t id = 1; id <= slots_.size(); ++id) {
    channel_slot& s = slots_[id - 1];
    if (!s.in_use) continue;
    if (s.opening) {
      auto done = std::move(*s.opening);
      s.opening.reset();
      s.graveyard = {s.control.handle, s.ring.handle};
      free_slot(id);
      done(ec);
    } else if (s.retired) {
      free_slot(id);
    } else if (s.endpoint != nullptr) {
      s.endpoint->on_link_failed(ec);
    }
  }
  if (on_failure_) on_failure_(*this, ec);
}

std::size_t link::drain_doorbells() {
  if (state_ != state::ready) return 0;
  std::size_t found = 0;
  doorbell::drain(
      arena_.header(), doorbells_consumed_,
      [&](std::uint32_t id) {
        ++found;
        if (channel_slot* s = slot(id); s != nullptr && s->endpoint != nullptr) s->endpoint->on_doorbell();
      },
      [&] {
        ++found;
        for (auto& s : slots_)
          if (s.in_use && s.endpoint != nullptr) s.endpoint->on_doorbell();
      });
  return found;
}

bool link::prepare_to_sleep() {
  return state_ != state::ready || doorbell::prepare_to_sleep(arena_.header(), doorbells_consumed_);
}
void link::woke_up() {
  if (state_ == state::ready) doorbell::woke_up(arena_.header());
}

proto::outcome<fabric::region> link::register_region(std::size_t length) {
  auto r = arena_.allocate(length);
  if (r) r->key = local_key_;
  return r;
}

void link::release_region(std::uint64_t handle) { arena_.release(handle); }

std::error_code link::write(fabric::remote_address dst, fabric::byte_pieces pieces) {
  if (state_ != state::ready) return make_error_code(error::connection_reset);
  std::size_t total = 0;
  for (auto p : pieces) total += p.size();
  if (dst.key != peer_key_ || dst.address < arena::header_bytes || dst.address > peer_.size() ||
      total > peer_.size() - dst.address || dst.address % 8 != 0)
    return make_error_code(error::protocol_violation);
  std::byte* out = peer_.base() + dst.address;
  if (total < 8) {
    for (auto p : pieces) out = static_cast<std::byte*>(std::memcpy(out, p.data(), p.size())) + p.size();
    return {};
  }
  // Everything but the first word, then the first word with release: a reader that sees the
  // first word (a frame's seq, an ack's head, a credit) with acquire sees the rest as well.
  std::uint64_t first = 0;
  std::size_t first_filled = 0;
  std::size_t at = 0;
  for (auto p : pieces) {
    std::size_t skip = 0;
    if (first_filled < 8) {
      skip = std::min<std::size_t>(8 - first_filled, p.size());
      std::memcpy(reinterpret_cast<std::byte*>(&first) + first_filled, p.data(), skip);
      first_filled += skip;
    }
    if (p.size() > skip) copy_to_peer(out + at + skip, p.data() + skip, p.size() - skip);
    at += p.size();
  }
  __atomic_store_n(reinterpret_cast<std::uint64_t*>(out), first, __ATOMIC_RELEASE);
  return {};
}

void link::ring_doorbell(std::uint32_t peer_channel) {
  if (state_ != state::ready) return;
  if (doorbell::push(peer_.base(), peer_channel, peer_doorbells_)) {
    const std::uint64_t one = 1;
    [[maybe_unused]] auto n = ::write(peer_wake_fd_, &one, sizeof one);
  }
}

}  // namespace bellows::shm
