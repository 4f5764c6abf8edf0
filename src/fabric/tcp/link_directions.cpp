// One connection each way. A connection that carries bytes both ways streams far slower under
// BBR than one that carries them one way: on this project's VM a bare pair of processes
// streaming 1 MiB messages over loopback fell from 7.7 to 5.4 GB/s when the receiver answered
// each message with a couple of hundred bytes on the same connection, and kept 7.6 when it
// answered on a second one (under cubic the same answers cost 5%). A large message's offer,
// grant and receipt are such answers. So once a large write went either way, the connecting
// side opens a second connection to the same address and binds it to the link by both sides'
// keys (bind, its first record there), and says so on the first (second_opened), which has the
// accepting side take it even if nobody accepts peers. Once that side answers second_bound, the
// connecting side sends `moved` as its last record on the first connection and everything after
// on the second; the accepting side reads the first until `moved`, then the second. Each side
// still reads one socket and writes one. Where the second connection cannot be opened or is not
// bound (the listener is gone), the first carries both ways, as it did before.
//
// Not at once: a ping-pong of small messages is faster on one connection, where each reply
// carries the acknowledgement of the request before it. Split, every small message costs an
// acknowledgement of its own (8 B half round trip 1.16x to 1.29x in ab-perf runs).
#include "fabric/tcp/link.hpp"

#include "fabric/tcp/socket_setup.hpp"

#include <bellows/error.hpp>

#include <sys/socket.h>
#include <algorithm>
#include <array>
#include <cerrno>
#include <cstring>

namespace bellows::tcp {

void link::bulk_seen() {
  if (!client_side_ || !ready() || second_tried_) return;
  second_tried_ = true;
  open_second();
}

void link::open_second() {
  second_.emplace(host_.executor);
  asio::error_code ec;
  second_->open(peer_address_.protocol(), ec);
  if (ec) return second_.reset();
  limit_silence(*second_, host_.options.peer_timeout);
  second_connecting_ = true;
  second_->async_connect(peer_address_,
                         [self = self()](std::error_code connect_ec) { self->second_connected(connect_ec); });
}

void link::second_connected(const std::error_code& ec) {
  second_connecting_ = false;
  if (failed() || !second_) return;
  if (ec) return second_.reset();  // the first connection goes on carrying both ways
  asio::error_code ignored;
  second_->set_option(asio::ip::tcp::no_delay(true), ignored);
  // The keys were sent in the clear: where the link was proven with a pre-shared key, the bind
  // proves it again, or an eavesdropper could bind a connection of its own.
  std::array<std::byte, bind_record_bytes> bind{};
  record_header h;
  h.kind = record_kind::bind;
  h.key = peer_key_;
  h.address = local_key_;
  h.length = sizeof(fabric::proof);
  std::memcpy(bind.data(), &h, sizeof h);
  if (!pre_shared_key_.empty()) {
    const auto proof = fabric::prove(pre_shared_key_, fabric::handshake_role::second_connection, own_nonce_,
                                     peer_nonce_, local_key_, peer_key_);
    std::memcpy(bind.data() + sizeof h, proof.data(), proof.size());
  }
  // The first bytes on a fresh connection: the socket takes them whole or something is wrong
  // with it, and then the first connection carries on alone.
  if (::send(second_->native_handle(), bind.data(), bind.size(), MSG_DONTWAIT | MSG_NOSIGNAL) !=
      static_cast<ssize_t>(bind.size())) {
    second_->close(ignored);
    return second_.reset();
  }
  // Nobody may be accepting on the other side: this asks it to take the connection anyway. No
  // answer (its listener is gone), and the first connection carries on alone.
  send_bare(record_kind::second_opened);
}

void link::send_bare(record_kind k) {
  record_header h;
  h.kind = k;
  queue(h, {});
  flush();
}

bool link::take_direction_record(record_kind k) {
  switch (k) {
    case record_kind::second_opened: siblings_->take_waiting(); return !failed();
    case record_kind::second_bound:
      move_wanted_ = true;
      flush();
      return !failed();
    case record_kind::moved:
      moved_ = true;
      // Its next record comes on its second connection: nothing may follow on this one.
      if (in_begin_ == in_end_) return true;
      fail(make_error_code(error::protocol_violation));
      return false;
    default: return false;
  }
}

void link::queue_move() {
  move_wanted_ = false;
  out_.clear();
  out_sent_ = 0;
  record_header moved;
  moved.kind = record_kind::moved;
  queue(moved, {});
  move_at_ = out_.size();
}

bool link::send_through_move() {
  // Nothing was borrowed before `moved` (it is queued only on an empty queue): a plain send.
  while (out_sent_ < *move_at_ && can_send()) {
    const ssize_t n =
        ::send(socket_->native_handle(), out_.data() + out_sent_, *move_at_ - out_sent_, MSG_DONTWAIT | MSG_NOSIGNAL);
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
      wait_for_room();
      return false;
    }
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      fail(make_error_code(error::connection_reset));
      return false;
    }
    out_sent_ += static_cast<std::size_t>(n);
  }
  if (out_sent_ < *move_at_) return false;
  move_at_.reset();
  sending_on_second_ = true;
  return true;
}

bool link::take_second(asio::ip::tcp::socket& socket, std::uint64_t client_key, const fabric::proof& offered) {
  if (client_side_ || !ready() || second_ || client_key != peer_key_) return false;
  if (!pre_shared_key_.empty()) {
    const auto expected = fabric::prove(pre_shared_key_, fabric::handshake_role::second_connection, peer_nonce_,
                                        own_nonce_, peer_key_, local_key_);
    if (!fabric::same_proof(expected, offered)) return false;
  }
  second_ = std::move(socket);
  send_bare(record_kind::second_bound);
  return true;
}

bool link::take_bind(const record_header& h, const fabric::proof& offered) {
  auto bound = siblings_ ? siblings_->find(h.key) : nullptr;
  asio::error_code ignored;
  socket_->cancel(ignored);  // this link's wait for it ends here
  reading_ = false;
  if (!bound || bound.get() == this || !bound->take_second(*socket_, h.address, offered)) {
    fail(make_error_code(error::protocol_violation));
    return false;
  }
  // The socket is its link's now; this one, which carried no channel, ends without a word.
  socket_.reset();
  state_ = state::failed;
  return false;
}

}  // namespace bellows::tcp
