#include "fabric/shm/connector.hpp"

#include "fabric/shm/listener.hpp"

#include <bellows/error.hpp>

#include <asio/error.hpp>
#include <asio/posix/stream_descriptor.hpp>

#include <fcntl.h>
#include <unistd.h>
#include <cerrno>

namespace bellows::shm {
namespace {

/// An open waiting for the peer's answer over the link.
class shm_open final : public fabric::pending_open {
 public:
  shm_open(std::weak_ptr<link> l, std::uint32_t id) : link_(std::move(l)), id_(id) {}
  void cancel() override {
    if (auto l = link_.lock()) l->cancel_open(id_);
  }

 private:
  // Weak: a link that no channel uses is dropped by the reactor, and must not live on here.
  std::weak_ptr<link> link_;
  std::uint32_t id_;
};

/// The listening socket of shm://NAME. Each connection becomes a server link, served by the
/// reactor; channels the peer opens over it go to the accept hook.
class shm_listener final : public fabric::listener, public std::enable_shared_from_this<shm_listener> {
 public:
  shm_listener(const fabric::host& h, int fd, link_options options, fabric::accept_hook on_accept)
      : host_(h), socket_(h.executor, fd), options_(options), on_accept_(std::move(on_accept)) {
    spare_fd_ = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
  }
  ~shm_listener() override {
    if (spare_fd_ >= 0) ::close(spare_fd_);
  }

  void want_peers(bool on) override {
    wanted_ = on;
    if (on) return accept_links();
    asio::error_code ignored;
    if (waiting_) socket_.cancel(ignored);
  }

 private:
  void accept_links() {
    if (waiting_ || !wanted_ || !socket_.is_open()) return;
    while (wanted_) {
      const int fd = accept_one(socket_.native_handle());
      // At the limit accept fails with EMFILE whether or not anyone is waiting.
      if (fd < 0 && (errno == EMFILE || errno == ENFILE) && spare_fd_ >= 0) {
        if (turn_away_one()) continue;
        break;
      }
      if (fd < 0) break;
      adopt(fd);
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

  void adopt(int fd) {
    auto l = link::accept(host_.executor, fd, options_, host_.budget);
    if (!l) return;  // refused peer (another user) or no memory: its connect fails on EOF
    // The link outlives the listener (its channels stay open after the acceptor closes), and
    // the hook decides, by what it captured, whether anyone still accepts.
    (*l)->set_hooks(
        [hook = on_accept_](link& at, const fabric::channel_setup& setup) {
          return hook(fabric::opened_channel{at.shared_from_this(), setup});
        },
        nullptr);
    host_.serve(*l);
  }

  /// At the descriptor limit a pending connection can be neither taken nor left (the listener
  /// would stay readable and the peer would wait forever): spend the spare descriptor to take
  /// it and close it at once, so that the peer's connect fails. False if none was waiting.
  bool turn_away_one() {
    ::close(spare_fd_);
    const int fd = accept_one(socket_.native_handle());
    if (fd >= 0) ::close(fd);
    spare_fd_ = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
    return fd >= 0;
  }

  fabric::host host_;
  asio::posix::stream_descriptor socket_;
  link_options options_;
  fabric::accept_hook on_accept_;
  int spare_fd_ = -1;
  bool wanted_ = false;
  bool waiting_ = false;
};

}  // namespace

link_options connector::link_options_for() const {
  return {host_.options.shm_arena_bytes, host_.options.allow_other_users, host_.wake_fd};
}

proto::outcome<std::shared_ptr<link>> connector::client_link(const std::string& name) {
  std::erase_if(client_links_, [](const auto& entry) { return entry.second.expired(); });
  if (auto it = client_links_.find(name); it != client_links_.end()) {
    // Reused even when no channel uses it right now (a new channel right after the last one
    // closed keeps its warm arena), unless the reactor already dropped it.
    if (auto l = it->second.lock(); l && !l->failed() && l->served()) return l;
  }
  auto l = link::connect(host_.executor, name, link_options_for(), host_.budget);
  if (!l) return l.failure();
  (*l)->set_hooks(nullptr, nullptr);
  client_links_[name] = *l;
  host_.serve(*l);
  return l;
}

std::shared_ptr<fabric::pending_open> connector::open(std::string_view address, const std::vector<tier>& tiers,
                                                      std::uint64_t max_message_size, fabric::open_handler done) {
  auto l = client_link(std::string(address));
  if (!l) {
    done(l.failure());
    return nullptr;
  }
  const auto id =
      (*l)->open_channel(tiers, max_message_size, [carrier = *l, done](proto::outcome<fabric::channel_setup> setup) {
        if (!setup) return done(setup.failure());
        done(fabric::opened_channel{carrier, std::move(*setup)});
      });
  if (id == 0) return nullptr;
  return std::make_shared<shm_open>(*l, id);
}

proto::outcome<std::shared_ptr<fabric::listener>> connector::listen(std::string_view address,
                                                                    fabric::accept_hook on_accept) {
  auto fd = listen_on(std::string(address));
  if (!fd) return fd.failure();
  return std::shared_ptr<fabric::listener>(
      std::make_shared<shm_listener>(host_, *fd, link_options_for(), std::move(on_accept)));
}

}  // namespace bellows::shm
