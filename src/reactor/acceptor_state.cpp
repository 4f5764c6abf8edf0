#include "reactor/acceptor_state.hpp"

#include "fabric/shm/listener.hpp"
#include "fabric/verbs/address.hpp"
#include "reactor/channel_state.hpp"
#include "reactor/reactor.hpp"

#include <bellows/acceptor.hpp>
#include <bellows/error.hpp>

#include <asio/error.hpp>

#include <fcntl.h>
#include <unistd.h>
#include <cerrno>

namespace bellows::detail {

acceptor_state::acceptor_state(reactor& r, int shm_listener, channel_options options)
    : reactor_(r), options_(std::move(options)) {
  if (shm_listener >= 0) {
    listener_.emplace(r.io(), shm_listener);
    spare_fd_ = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
  }
  reactor_.add_acceptor(this);
}

std::error_code acceptor_state::listen_rdma(const sockaddr_storage& at) {
  auto weak = weak_from_this();
  auto l = reactor_.rdma().listen(
      at,
      [weak] {
        auto self = weak.lock();
        return self && !self->closed_;
      },
      [weak](const verbs::opened_channel& c) {
        auto self = weak.lock();
        return self && self->on_channel_opened(c.link, c.setup);
      });
  if (!l) return l.failure();
  rdma_listener_ = std::move(*l);
  return {};
}

acceptor_state::~acceptor_state() {
  if (spare_fd_ >= 0) ::close(spare_fd_);
  if (!reactor_gone_) reactor_.remove_acceptor(this);
}

asio::any_io_executor acceptor_state::executor() const { return reactor_.executor(); }

void acceptor_state::start_accept(std::uint64_t id, channel_completion done) {
  reactor_.op_started();
  if (closed_) {
    done.post(asio::error::operation_aborted, channel{});
    return reactor_.op_finished();
  }
  if (!backlog_.empty()) {
    done.post({}, std::move(backlog_.front()));
    backlog_.pop_front();
    return reactor_.op_finished();
  }
  waiting_.emplace_back(id, std::move(done));
  accept_links();
}

void acceptor_state::cancel(std::uint64_t id) {
  for (auto it = waiting_.begin(); it != waiting_.end(); ++it) {
    if (it->first != id) continue;
    it->second.post(asio::error::operation_aborted, channel{});
    waiting_.erase(it);
    if (waiting_.empty() && listener_) listener_->cancel();
    return reactor_.op_finished();
  }
}

void acceptor_state::close() {
  if (closed_) return;
  closed_ = true;
  if (listener_) listener_->close();
  rdma_listener_.reset();
  backlog_.clear();  // their peers see connection_reset
  while (!waiting_.empty()) {
    waiting_.front().second.post(asio::error::operation_aborted, channel{});
    waiting_.pop_front();
    reactor_.op_finished();
  }
}

void acceptor_state::shutdown() {
  reactor_gone_ = true;
  waiting_.clear();
  backlog_.clear();
  listener_.reset();
  rdma_listener_.reset();
}

void acceptor_state::accept_links() {
  if (listening_ || closed_ || waiting_.empty() || !listener_) return;
  for (;;) {
    const int fd = shm::accept_one(listener_->native_handle());
    // At the limit accept fails with EMFILE whether or not anyone is waiting.
    if (fd < 0 && (errno == EMFILE || errno == ENFILE) && spare_fd_ >= 0) {
      if (turn_away_one()) continue;
      break;
    }
    if (fd < 0) break;
    reactor_.adopt_server_link(fd, weak_from_this());
  }
  // EAGAIN, or a transient failure: either way, wait for the next connection.
  listening_ = true;
  listener_->async_wait(asio::posix::descriptor_base::wait_read, [weak = weak_from_this()](std::error_code ec) {
    auto self = weak.lock();
    if (!self) return;
    self->listening_ = false;
    if (!ec) self->accept_links();
  });
}

bool acceptor_state::turn_away_one() {
  ::close(spare_fd_);
  const int fd = shm::accept_one(listener_->native_handle());
  if (fd >= 0) ::close(fd);
  spare_fd_ = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
  return fd >= 0;
}

bool acceptor_state::on_channel_opened(const std::shared_ptr<fabric::link>& link, const fabric::channel_setup& setup) {
  if (closed_) return false;
  auto state = channel_state::make(reactor_, link, setup, options_);
  if (!state) return false;
  channel accepted(std::move(*state));
  if (!waiting_.empty()) {
    waiting_.front().second.post({}, std::move(accepted));
    waiting_.pop_front();
    reactor_.op_finished();
  } else {
    backlog_.push_back(std::move(accepted));
  }
  return true;
}

// ---- entry points ----

std::shared_ptr<acceptor_state> listen(const asio::any_io_executor& ex, std::string_view uri,
                                       const channel_options& options, std::error_code& ec) {
  constexpr std::string_view shm_scheme = "shm://";
  constexpr std::string_view rdma_scheme = "rdma://";
  ec = {};
  const bool shm = uri.starts_with(shm_scheme);
  const bool rdma = uri.starts_with(rdma_scheme);
  if ((!shm && !rdma) || !proto::tier_table::make(options.tiers)) {
    ec = make_error_code(error::invalid_argument);
    return nullptr;
  }
  reactor& r = reactor::of(ex);
  if (rdma) {
    auto at = verbs::resolve(uri.substr(rdma_scheme.size()), true);
    if (!at) {
      ec = at.failure();
      return nullptr;
    }
    auto state = std::make_shared<acceptor_state>(r, -1, options);
    ec = state->listen_rdma(*at);
    return ec ? nullptr : state;
  }
  auto fd = shm::listen_on(std::string(uri.substr(shm_scheme.size())));
  if (!fd) {
    ec = fd.failure();
    return nullptr;
  }
  return std::make_shared<acceptor_state>(r, *fd, options);
}

asio::any_io_executor executor_of(const acceptor_state& s) noexcept { return s.executor(); }
std::uint64_t next_operation_id(acceptor_state& s) noexcept { return s.next_id(); }
void start_accept(const std::shared_ptr<acceptor_state>& s, std::uint64_t id, channel_completion done) {
  s->start_accept(id, std::move(done));
}
void cancel(acceptor_state& s, std::uint64_t id) noexcept { s.cancel(id); }
void close(acceptor_state& s) noexcept { s.close(); }

}  // namespace bellows::detail
