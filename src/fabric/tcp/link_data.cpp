// A tcp link's data path: writes and doorbells queued as records and sent, and the records that
// arrive placed into this side's regions, their doorbells and control messages handed on.
#include "fabric/tcp/link.hpp"

#include <bellows/error.hpp>

#include <sys/socket.h>
#include <sys/uio.h>
#include <algorithm>
#include <cerrno>
#include <cstring>

namespace bellows::tcp {
namespace {

/// Reads per poll: enough to drain a busy connection's backlog in steps, few enough that one
/// flooding peer cannot hold the reactor.
constexpr int reads_per_poll = 16;

std::size_t total_size(fabric::byte_pieces pieces) {
  std::size_t total = 0;
  for (auto p : pieces) total += p.size();
  return total;
}

}  // namespace

// ---- sending ----

void link::queue(const record_header& h, fabric::byte_pieces payload) {
  const auto* header = reinterpret_cast<const std::byte*>(&h);
  out_.insert(out_.end(), header, header + sizeof h);
  for (auto p : payload) out_.insert(out_.end(), p.begin(), p.end());
}

void link::borrow(const record_header& h, fabric::byte_pieces payload) {
  // A doorbell queued ahead of a large write announces something the peer should act on while
  // the write travels (the next message's offer): it leaves now, not behind the write's bytes.
  if (doorbell_queued_ || borrowed_.size() + payload.size() > max_borrowed) flush();
  const auto* header = reinterpret_cast<const std::byte*>(&h);
  out_.insert(out_.end(), header, header + sizeof h);
  // Small pieces (a frame's header, kept in the driver's action) are copied: only a message's
  // own bytes are sure to outlive the batch.
  for (auto p : payload) {
    if (p.size() < direct_payload_min) {
      out_.insert(out_.end(), p.begin(), p.end());
    } else {
      borrowed_.push_back({out_.size(), p});
      borrowed_bytes_ += p.size();
    }
  }
}

void link::flush() {
  doorbell_queued_ = false;
  if (!borrowed_.empty()) return send_with_borrowed();
  while (unsent() != 0 && can_send()) {
    const ssize_t n = ::send(socket_->native_handle(), out_.data() + out_sent_, unsent(), MSG_DONTWAIT | MSG_NOSIGNAL);
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return wait_for_room();
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return fail(make_error_code(error::connection_reset));
    out_sent_ += static_cast<std::size_t>(n);
  }
  if (unsent() == 0) {
    out_.clear();
    out_sent_ = 0;
  }
}

void link::send_with_borrowed() {
  // The queue with the borrowed payloads in their places, in one sendmsg. Whatever the socket
  // does not take is copied into the queue where it belongs, since the borrowed memory is the
  // caller's only until this returns.
  std::size_t sent = 0;
  if (can_send()) {
    std::vector<iovec>& iov = gather_;
    iov.clear();
    std::size_t from = out_sent_;
    for (const auto& b : borrowed_) {
      if (b.after > from) iov.push_back({out_.data() + from, b.after - from});
      from = b.after;
      iov.push_back({const_cast<std::byte*>(b.bytes.data()), b.bytes.size()});
    }
    if (out_.size() > from) iov.push_back({out_.data() + from, out_.size() - from});
    msghdr msg{};
    msg.msg_iov = iov.data();
    msg.msg_iovlen = iov.size();
    ssize_t n;
    do {
      n = ::sendmsg(socket_->native_handle(), &msg, MSG_DONTWAIT | MSG_NOSIGNAL);
    } while (n < 0 && errno == EINTR);
    if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK) return fail(make_error_code(error::connection_reset));
    sent = n < 0 ? 0 : static_cast<std::size_t>(n);
  }
  // What went, in order: queued bytes up to a payload, the payload, and so on; the first piece
  // the socket did not take whole ends it.
  std::size_t queued_sent = out_sent_;
  std::size_t first_unsent = 0;  // borrowed_[first_unsent].bytes left partly or wholly unsent
  for (; first_unsent < borrowed_.size(); ++first_unsent) {
    auto& b = borrowed_[first_unsent];
    const std::size_t before = std::min(sent, b.after - queued_sent);
    queued_sent += before;
    sent -= before;
    if (queued_sent < b.after) break;
    const std::size_t taken = std::min(sent, b.bytes.size());
    sent -= taken;
    b.bytes = b.bytes.subspan(taken);
    if (!b.bytes.empty()) break;
  }
  if (first_unsent == borrowed_.size()) queued_sent += sent;
  // The rest of each payload goes into the queue at its place, the last first so that the
  // places of the others stay where they were.
  for (std::size_t i = borrowed_.size(); i-- > first_unsent;) {
    const auto& b = borrowed_[i];
    out_.insert(out_.begin() + static_cast<std::ptrdiff_t>(b.after), b.bytes.begin(), b.bytes.end());
  }
  borrowed_.clear();
  borrowed_bytes_ = 0;
  out_sent_ = queued_sent;
  if (out_sent_ == out_.size()) {
    out_.clear();
    out_sent_ = 0;
  }
  if (unsent() != 0) wait_for_room();
}

void link::wait_for_room() {
  if (writing_ || !socket_ || failed()) return;
  writing_ = true;
  socket_->async_wait(asio::ip::tcp::socket::wait_write, [self = self()](std::error_code) {
    self->writing_ = false;
    // Cancelled by disarm() or not, what is queued must still go out (busy() holds the reactor).
    self->flush();
  });
}

std::error_code link::write(fabric::remote_address dst, fabric::byte_pieces pieces) {
  if (failed()) return why_failed_;
  if (dst.key != peer_key_ || dst.address < peer_window_begin_) return make_error_code(error::protocol_violation);
  record_header h;
  h.kind = record_kind::write;
  h.key = dst.key;
  h.address = dst.address;
  h.length = total_size(pieces);
  if (h.length >= direct_payload_min) {
    borrow(h, pieces);
    if (h.length >= send_at_once_min) flush();
  } else {
    queue(h, pieces);
  }
  return failed() ? why_failed_ : std::error_code{};
}

std::error_code link::write_frame(fabric::remote_address dst, fabric::byte_pieces body,
                                  fabric::remote_address trailer_dst, std::span<const std::byte> trailer) {
  // The trailer goes first: records are placed in order and a frame's first word is placed
  // last, so the peer sees the trailer before it can see the frame.
  const std::span<const std::byte> tail[] = {trailer};
  if (auto ec = write(trailer_dst, tail)) return ec;
  return write(dst, body);
}

void link::ring_doorbell(std::uint32_t peer_channel) {
  if (failed()) return;
  record_header h;
  h.kind = record_kind::doorbell;
  h.channel = peer_channel;
  queue(h, {});
  doorbell_queued_ = true;
}

std::error_code link::write_from_file(fabric::remote_address dst, std::span<const std::byte> prefix,
                                      fabric::file_piece piece) {
  auto ec = provider::write_from_file(dst, prefix, piece);
  // The bytes were read into a buffer that the next file write reuses.
  flush();
  return ec;
}

// ---- lending ----

std::optional<fabric::region> link::lend(std::span<std::byte> memory) {
  auto region = regions_.lend(memory);
  if (!region) return std::nullopt;
  return *region;
}

void link::release_region(std::uint64_t handle) {
  // A write into a lent buffer may be half received: the rest of it is dropped, not placed.
  const auto lent = regions_.lent_memory(handle);
  if (current_ && !current_->dropped && !lent.empty() && current_->to >= lent.data() &&
      current_->to < lent.data() + lent.size())
    current_->dropped = true;
  regions_.release(handle);
}

// ---- receiving ----

std::size_t link::poll() {
  if (failed() || connecting_ || !socket_) return 0;
  flush();  // writes this pass made without a doorbell
  return take_records();
}

std::size_t link::take_records() {
  std::size_t found = 0;
  std::vector<fabric::link_message> controls;
  rung_ = false;
  for (int round = 0; round < reads_per_poll && !failed() && socket_; ++round) {
    // A doorbell ahead of a long write: its channel looks at what it announced before the
    // write's bytes come in (an offer answered now is a message that follows them at once).
    if (rung_ && current_ && in_begin_ == in_end_) break;
    bool drained = false;
    if (receive_direct(found, drained)) {
      if (drained) break;
      continue;
    }
    if (in_begin_ == in_end_) in_begin_ = in_end_ = 0;
    if (in_end_ == in_.size()) {
      std::memmove(in_.data(), in_.data() + in_begin_, in_end_ - in_begin_);
      in_end_ -= in_begin_;
      in_begin_ = 0;
    }
    const std::size_t room = in_.size() - in_end_;
    const ssize_t n = ::recv(socket_->native_handle(), in_.data() + in_end_, room, MSG_DONTWAIT);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) break;
    if (n <= 0) {
      if (!controls.empty()) handle_batch(controls);
      fail(make_error_code(error::connection_reset));
      return found + 1;
    }
    in_end_ += static_cast<std::size_t>(n);
    if (!take_buffered(found, controls)) return found + 1;
    // A short read emptied the socket: asking again now would only cost a system call that
    // says so, on the way between a ping and its reply. The next poll looks again.
    if (static_cast<std::size_t>(n) < room) break;
  }
  if (!controls.empty() && !failed()) handle_batch(controls);
  return found;
}

bool link::receive_direct(std::size_t& found, bool& drained) {
  // Only the body of a large write, once the buffer is empty and its first word is held.
  if (!current_ || current_->header.kind != record_kind::write || current_->dropped || in_begin_ != in_end_ ||
      current_->received < 8)
    return false;
  const std::uint64_t left = current_->header.length - current_->received;
  if (left < 4096) return false;
  const ssize_t n = ::recv(socket_->native_handle(), current_->to + current_->received, left, MSG_DONTWAIT);
  if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) {
    drained = errno != EINTR;
    return true;
  }
  if (n <= 0) {
    fail(make_error_code(error::connection_reset));
    drained = true;
    return true;
  }
  current_->received += static_cast<std::uint64_t>(n);
  if (current_->received == current_->header.length) {
    finish_write();
    ++found;
  }
  return true;
}

bool link::take_buffered(std::size_t& found, std::vector<fabric::link_message>& controls) {
  for (;;) {
    const std::size_t have = in_end_ - in_begin_;
    const std::byte* at = in_.data() + in_begin_;
    if (!current_) {
      if (have < sizeof(record_header)) return true;
      record_header h;
      std::memcpy(&h, at, sizeof h);
      in_begin_ += sizeof h;
      // A write or doorbell may depend on the control messages before it (the hello that
      // makes the link ready, an accept followed by the first frame): those are handled first.
      if (h.kind != record_kind::control && !controls.empty()) {
        handle_batch(controls);
        controls.clear();
        if (failed()) return false;
      }
      if (!begin_record(h)) return false;
      if (h.kind == record_kind::doorbell) {
        ++found;
        rung_ = true;
        if (auto* endpoint = endpoint_of(h.channel)) endpoint->on_doorbell();
        current_.reset();
        if (failed()) return false;
      }
      continue;
    }
    const record_header& h = current_->header;
    if (h.kind == record_kind::control) {
      if (have < sizeof(fabric::link_message)) return true;
      fabric::link_message m;
      std::memcpy(&m, at, sizeof m);
      in_begin_ += sizeof m;
      current_.reset();
      ++found;
      if (m.magic != fabric::link_magic || m.version != fabric::link_version) {
        fail(make_error_code(error::protocol_violation));
        return false;
      }
      controls.push_back(m);
      continue;
    }
    // A write: short ones are placed whole, longer ones as they come, first word last.
    const std::uint64_t left = h.length - current_->received;
    if (h.length < 8 && have < h.length) return true;
    if (have == 0) return true;
    const std::size_t n = static_cast<std::size_t>(std::min<std::uint64_t>(left, have));
    place(at, n);
    in_begin_ += n;
    if (current_->received == h.length) {
      finish_write();
      ++found;
    }
  }
}

bool link::begin_record(const record_header& h) {
  incoming in;
  in.header = h;
  bool valid = false;
  switch (h.kind) {
    case record_kind::control: valid = h.length == sizeof(fabric::link_message); break;
    case record_kind::doorbell: valid = h.length == 0 && ready(); break;
    case record_kind::write:
      in.to = ready() ? regions_.find(h.key, h.address, h.length) : nullptr;
      in.dropped = in.to == nullptr && ready() && regions_.taken_back(h.key, h.address);
      valid = (in.to != nullptr || in.dropped) && h.length != 0;
      break;
  }
  if (!valid) {
    fail(make_error_code(error::protocol_violation));
    return false;
  }
  current_ = in;
  return true;
}

void link::place(const std::byte* bytes, std::size_t n) {
  incoming& in = *current_;
  if (in.dropped) {
    in.received += n;
    return;
  }
  std::size_t at = 0;
  if (in.header.length >= 8 && in.received < 8) {
    const std::size_t held = std::min<std::size_t>(8 - in.received, n);
    std::memcpy(in.first_word + in.received, bytes, held);
    in.received += held;
    at = held;
  }
  if (n > at) std::memcpy(in.to + in.received, bytes + at, n - at);
  in.received += n - at;
}

void link::finish_write() {
  incoming& in = *current_;
  if (in.header.length >= 8 && !in.dropped) std::memcpy(in.to, in.first_word, 8);
  current_.reset();
}

}  // namespace bellows::tcp
