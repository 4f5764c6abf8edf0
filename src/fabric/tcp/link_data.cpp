// A tcp link's receiving side: the records that arrive placed into this side's regions (a
// large write read straight into the ring or lent buffer), their doorbells and control messages
// handed on; and the buffers lent to the peer.
#include "fabric/tcp/link.hpp"

#include <bellows/error.hpp>

#include <sys/socket.h>
#include <algorithm>
#include <cerrno>
#include <cstring>

namespace bellows::tcp {
namespace {

/// Reads per poll: enough to drain a busy connection's backlog in steps, few enough that one
/// flooding peer cannot hold the reactor.
constexpr int reads_per_poll = 16;

}  // namespace

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
    // An accepted connection's first record says whether it is a link of its own or another's
    // second connection: nothing beyond it is read until that is known.
    const std::size_t room = first_record_unread_ ? bind_record_bytes - in_end_ : in_.size() - in_end_;
    const ssize_t n = ::recv(receiving_descriptor(), in_.data() + in_end_, room, MSG_DONTWAIT);
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
  const ssize_t n = ::recv(receiving_descriptor(), current_->to + current_->received, left, MSG_DONTWAIT);
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
      if (h.kind == record_kind::bind) {
        // Only a connection's first record may bind it, and only with a proof after it.
        if (!first_record_unread_ || h.length != sizeof(fabric::proof)) {
          fail(make_error_code(error::protocol_violation));
          return false;
        }
        if (have < bind_record_bytes) return true;
        fabric::proof offered;
        std::memcpy(offered.data(), at + sizeof h, offered.size());
        in_begin_ += bind_record_bytes;
        return take_bind(h, offered);
      }
      in_begin_ += sizeof h;
      first_record_unread_ = false;
      // A write or doorbell may depend on the control messages before it (the hello that
      // makes the link ready, an accept followed by the first frame): those are handled first.
      if (h.kind != record_kind::control && !controls.empty()) {
        handle_batch(controls);
        controls.clear();
        if (failed()) return false;
      }
      if (!begin_record(h)) return false;
      if (is_direction_record(h.kind)) {
        current_.reset();
        if (!take_direction_record(h.kind)) return false;
        continue;
      }
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
    case record_kind::second_opened: valid = h.length == 0 && ready() && !client_side_; break;
    case record_kind::second_bound:
      valid = h.length == 0 && client_side_ && second_ && !move_wanted_ && !move_at_ && !sending_on_second_;
      break;
    case record_kind::moved: valid = h.length == 0 && !client_side_ && second_ && !moved_; break;
    case record_kind::bind: break;  // only as an accepted connection's first record (take_buffered)
    case record_kind::padding:      // read like a write into a buffer taken back: thrown away
      in.dropped = true;
      valid = h.length != 0 && h.length <= max_padding;
      break;
    case record_kind::write:
      in.to = ready() ? regions_.find(h.key, h.address, h.length) : nullptr;
      in.dropped = in.to == nullptr && ready() && regions_.taken_back(h.key, h.address);
      valid = (in.to != nullptr || in.dropped) && h.length != 0;
      if (valid && h.length >= send_at_once_min) bulk_seen();
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
