// A tcp link's connection: connecting, the hello that carries each side's key, control
// messages, watching the sockets, and failing.
#include "fabric/tcp/link.hpp"

#include "fabric/tcp/socket_setup.hpp"

#include <bellows/error.hpp>

#include <asio/error.hpp>

#include <algorithm>
#include <random>

namespace bellows::tcp {
namespace {

std::uint64_t random_key() {
  std::random_device rd;
  return (std::uint64_t{rd()} << 32 | rd()) | 1;
}

/// The peer's first window byte: its first region's first address (regions.hpp).
constexpr std::uint64_t first_region_address = std::uint64_t{1} << regions::address_shift;

}  // namespace

link::link(const fabric::host& h, asio::ip::tcp::socket socket, bool client_side, std::uint64_t key,
           std::string pre_shared_key)
    : socket_(std::move(socket)),
      host_(h),
      regions_(h.budget, key),
      local_key_(key),
      client_side_(client_side),
      pre_shared_key_(std::move(pre_shared_key)),
      in_(64 * 1024) {
  if (!pre_shared_key_.empty()) own_nonce_ = fabric::fresh_nonce();
}

std::shared_ptr<link> link::connect(const fabric::host& h, const asio::ip::tcp::endpoint& to,
                                    std::string pre_shared_key) {
  std::shared_ptr<link> l(
      new link(h, asio::ip::tcp::socket(h.executor), true, random_key(), std::move(pre_shared_key)));
  l->connecting_ = true;
  l->peer_endpoint_.provider = "tcp";
  l->peer_endpoint_.address = to.address().to_string();
  l->peer_endpoint_.port = to.port();
  l->peer_address_ = to;
  asio::error_code open_failed;
  l->socket_->open(to.protocol(), open_failed);
  if (!open_failed) limit_silence(*l->socket_, h.options.peer_timeout);  // a SYN unanswered counts too
  l->socket_->async_connect(to, [l](std::error_code ec) {
    if (!ec && l->socket_ && !l->failed()) return l->connected();
    l->connecting_ = false;
    l->fail_from(ec ? ec : asio::error::operation_aborted);
  });
  return l;
}

std::shared_ptr<link> link::accept(const fabric::host& h, asio::ip::tcp::socket socket, std::string pre_shared_key,
                                   std::shared_ptr<accepted_links> siblings) {
  limit_silence(socket, h.options.peer_timeout);
  std::shared_ptr<link> l(new link(h, std::move(socket), false, random_key(), std::move(pre_shared_key)));
  l->siblings_ = std::move(siblings);
  l->siblings_->add(l->local_key_, l);
  l->first_record_unread_ = true;
  l->connected();
  return l;
}

void link::connected() {
  connecting_ = false;
  asio::error_code ec;
  socket_->set_option(asio::ip::tcp::no_delay(true), ec);
  const auto peer = socket_->remote_endpoint(ec);
  if (ec) return fail_from(ec);
  peer_endpoint_.provider = "tcp";
  peer_endpoint_.address = peer.address().to_string();
  peer_endpoint_.port = peer.port();
  fabric::link_message hello;
  hello.kind = fabric::message_kind::hello;
  hello.key = local_key_;
  if (!pre_shared_key_.empty()) {
    hello.second = fabric::hello_demands_proof;
    std::copy(own_nonce_.begin(), own_nonce_.end(), hello.nonce);
  }
  transmit(hello);
  // The reactor may be asleep waiting for this connection: have it poll (and watch) the socket.
  wake(host_.wake_fd);
}

void link::on_hello(const fabric::link_message& m) {
  if (m.key == 0 || peer_key_ != 0 || m.second > fabric::hello_demands_proof)
    return fail(make_error_code(error::protocol_violation));
  peer_key_ = m.key;
  peer_window_begin_ = first_region_address;
  peer_window_end_ = UINT64_MAX;
  // Both hold a key, or neither: one side alone cannot set up anything with the other.
  const bool peer_demands_proof = m.second == fabric::hello_demands_proof;
  if (peer_demands_proof != !pre_shared_key_.empty()) return fail(make_error_code(error::authentication_failed));
  if (!peer_demands_proof) return become_ready();
  std::copy(m.nonce, m.nonce + sizeof m.nonce, peer_nonce_.begin());
  const auto role = client_side_ ? fabric::handshake_role::connecting : fabric::handshake_role::accepting;
  const fabric::proof mine = fabric::prove(pre_shared_key_, role, own_nonce_, peer_nonce_, local_key_, peer_key_);
  fabric::link_message answer;
  answer.kind = fabric::message_kind::key_proof;
  std::copy(mine.begin(), mine.end(), answer.mac);
  transmit(answer);
  proof_expected_ = true;
}

void link::on_proof(const fabric::link_message& m) {
  if (!proof_expected_) return fail(make_error_code(error::protocol_violation));
  proof_expected_ = false;
  const auto peer_role = client_side_ ? fabric::handshake_role::accepting : fabric::handshake_role::connecting;
  const fabric::proof expected =
      fabric::prove(pre_shared_key_, peer_role, peer_nonce_, own_nonce_, peer_key_, local_key_);
  fabric::proof offered;
  std::copy(m.mac, m.mac + sizeof m.mac, offered.begin());
  if (!fabric::same_proof(expected, offered)) return fail(make_error_code(error::authentication_failed));
  become_ready();
}

void link::transmit(const fabric::link_message& m) {
  record_header h;
  h.kind = record_kind::control;
  h.length = sizeof m;
  const std::span<const std::byte> piece[] = {std::as_bytes(std::span(&m, 1))};
  queue(h, piece);
  flush();
}

void link::arm() {
  armed_ = true;
  if (failed() || connecting_) return;
  take_records();
  flush();
}

void link::disarm() {
  armed_ = false;
  // Cancels the write waits too; their handlers start another while output is left (busy()).
  asio::error_code ignored;
  if (socket_ && reading_) socket_->cancel(ignored);
  if (second_ && (reading_second_ || sending_on_second_)) second_->cancel(ignored);
}

void link::dropped() noexcept {
  multiplexed_link::dropped();
  // Nobody will use it: a connect still in flight must not hold the io_context.
  asio::error_code ignored;
  if (connecting_ && socket_) socket_->close(ignored);
  if (second_connecting_ && second_) second_->close(ignored);
}

void link::shutdown() {
  if (!failed()) state_ = state::failed;
  socket_.reset();
  second_.reset();
  regions_.leave_budget();  // the reactor, and its budget, go before the channels that hold this link
}

void link::watch_for_records() {
  if (!socket_ || failed() || connecting_) return;
  // Each socket has its wait: a server that moved on to the second leaves the first's be.
  const bool second = reading_second();
  bool& waiting = second ? reading_second_ : reading_;
  if (waiting) return;
  waiting = true;
  (second ? *second_ : *socket_)
      .async_wait(asio::ip::tcp::socket::wait_read, [self = self(), second](std::error_code ec) {
        (second ? self->reading_second_ : self->reading_) = false;
        if (ec == asio::error::operation_aborted) return;
        wake(self->host_.wake_fd);  // the reactor polls, and poll() reads
      });
}

bool link::prepare_to_sleep() {
  if (failed()) return true;
  if (connecting_) return true;  // connected() wakes the reactor
  flush();
  if (take_records() != 0) return false;
  watch_for_records();
  return true;
}

bool link::prepare_to_idle(std::vector<int>& descriptors) {
  if (failed() || connecting_) return true;
  flush();
  if (take_records() != 0) return false;
  if (socket_ && !failed()) descriptors.push_back(receiving_descriptor());
  return true;
}

void link::last_look() {
  if (socket_ && !failed() && !connecting_) take_records();
}

void link::fail_from(const std::error_code& asio_error) {
  if (asio_error == asio::error::eof || asio_error == asio::error::connection_reset ||
      asio_error == asio::error::broken_pipe || asio_error == asio::error::operation_aborted)
    return fail(make_error_code(error::connection_reset));
  // Asio's own categories name the problem well (host not found); system errors are reported
  // in the standard category, as every other provider does.
  if (asio_error.category() == asio::error::get_system_category())
    return fail(std::error_code(asio_error.value(), std::system_category()));
  fail(asio_error);
}

void link::fail(std::error_code ec) {
  if (failed()) return;
  asio::error_code ignored;
  if (socket_) socket_->close(ignored);
  if (second_) second_->close(ignored);
  out_.clear();
  out_sent_ = 0;
  borrowed_.clear();
  borrowed_bytes_ = 0;
  current_.reset();
  fail_channels(ec);
}

}  // namespace bellows::tcp
