// A tcp link's sending side: writes and doorbells queued as records, large payloads borrowed
// from the caller's memory, and all of it sent in one sendmsg when the batch ends.
#include "fabric/tcp/link.hpp"

#include "fabric/tcp/copy_alignment.hpp"

#include <bellows/error.hpp>

#include <sys/socket.h>
#include <sys/uio.h>
#include <algorithm>
#include <cerrno>

namespace bellows::tcp {
namespace {

std::size_t total_size(fabric::byte_pieces pieces) {
  std::size_t total = 0;
  for (auto p : pieces) total += p.size();
  return total;
}

}  // namespace

void link::queue(const record_header& h, fabric::byte_pieces payload) {
  const auto* header = reinterpret_cast<const std::byte*>(&h);
  out_.insert(out_.end(), header, header + sizeof h);
  for (auto p : payload) out_.insert(out_.end(), p.begin(), p.end());
}

void link::borrow(const record_header& h, fabric::byte_pieces payload, const void* owner) {
  // A doorbell queued ahead of a large write announces something the peer should act on while
  // the write travels (the next message's offer): it leaves now, not behind the write's bytes.
  if (doorbell_queued_ || borrowed_.size() + payload.size() > max_borrowed) flush();
  // Payloads held by their owners may still fill the list: this one is copied then.
  const bool may_borrow = borrowed_.size() + payload.size() <= max_borrowed;
  if (may_borrow) pad_for_copies(h, payload);
  const auto* header = reinterpret_cast<const std::byte*>(&h);
  out_.insert(out_.end(), header, header + sizeof h);
  // Small pieces (a frame's header, kept in the driver's action) are copied: only a message's
  // own bytes are sure to outlive the batch.
  for (auto p : payload) {
    if (p.size() < direct_payload_min || !may_borrow) {
      out_.insert(out_.end(), p.begin(), p.end());
    } else {
      borrowed_.push_back({out_.size(), p, owner});
      borrowed_bytes_ += p.size();
    }
  }
}

void link::pad_for_copies(const record_header& h, fabric::byte_pieces payload) {
  // Where the first borrowed piece would land if this batch's bytes start a fresh kernel page
  // (copy_alignment.hpp): after what is unsent, the write's header and its small pieces.
  std::uint64_t small_before = 0;
  for (auto p : payload) {
    if (p.size() >= direct_payload_min) {
      const std::uint64_t pad = padding_before(unsent() + sizeof h + small_before,
                                               reinterpret_cast<std::uintptr_t>(p.data()), h.address + small_before);
      if (pad == 0) return;
      record_header padding;
      padding.kind = record_kind::padding;
      padding.length = pad - sizeof padding;
      const auto* header = reinterpret_cast<const std::byte*>(&padding);
      out_.insert(out_.end(), header, header + sizeof padding);
      out_.resize(out_.size() + padding.length);
      return;
    }
    small_before += p.size();
  }
}

void link::flush() {
  doorbell_queued_ = false;
  if (move_wanted_ && unsent() == 0 && can_send()) queue_move();
  // Until `moved` left on the first connection, what was queued after it waits; a payload no
  // owner holds is copied now, as below.
  if (move_at_ && !send_through_move()) return copy_borrowed(nullptr);
  if (!borrowed_.empty()) return send_with_borrowed();
  while (unsent() != 0 && can_send()) {
    const ssize_t n =
        ::send(sending_socket().native_handle(), out_.data() + out_sent_, unsent(), MSG_DONTWAIT | MSG_NOSIGNAL);
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
  // The queue with the borrowed payloads in their places, in one sendmsg.
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
      n = ::sendmsg(sending_socket().native_handle(), &msg, MSG_DONTWAIT | MSG_NOSIGNAL);
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
  out_sent_ = queued_sent;
  borrowed_.erase(borrowed_.begin(), borrowed_.begin() + static_cast<std::ptrdiff_t>(first_unsent));
  borrowed_bytes_ = 0;
  for (const auto& b : borrowed_) borrowed_bytes_ += b.bytes.size();
  // The rest of a payload no owner holds is copied now: its memory is the caller's only until
  // this returns. A held one is sent from where it is when the socket has room again.
  copy_borrowed(nullptr);
  drop_sent();
  if (unsent() != 0) wait_for_room();
}

void link::copy_borrowed(const void* owner) {
  // Front to back, each place moved on by the bytes inserted before it.
  std::size_t inserted = 0;
  std::size_t kept = 0;
  for (auto b : borrowed_) {
    b.after += inserted;
    if (b.owner == owner) {
      out_.insert(out_.begin() + static_cast<std::ptrdiff_t>(b.after), b.bytes.begin(), b.bytes.end());
      inserted += b.bytes.size();
      borrowed_bytes_ -= b.bytes.size();
    } else {
      borrowed_[kept++] = b;
    }
  }
  borrowed_.resize(kept);
}

void link::drop_sent() {
  if (out_sent_ == out_.size() && borrowed_.empty()) {
    out_.clear();
    out_sent_ = 0;
    return;
  }
  // A held payload waiting for room keeps the queue's sent bytes ahead of it from being
  // cleared with the rest; past a page of them they go, and the places move back.
  if (borrowed_.empty() || out_sent_ < 4096) return;
  out_.erase(out_.begin(), out_.begin() + static_cast<std::ptrdiff_t>(out_sent_));
  for (auto& b : borrowed_) b.after -= out_sent_;
  out_sent_ = 0;
}

void link::release_held(const void* owner) {
  // Not sent here: this runs while the channel carries out a batch, and a link failing in it
  // would fail the channel underneath. Copying the rest costs only on the paths that get here
  // with bytes held: a send failed or cancelled, or a receipt that came before the bytes left.
  if (owner != nullptr) copy_borrowed(owner);
}

void link::wait_for_room() {
  if (writing_ || !socket_ || failed()) return;
  writing_ = true;
  sending_socket().async_wait(asio::ip::tcp::socket::wait_write, [self = self()](std::error_code) {
    self->writing_ = false;
    // Cancelled by disarm() or not, what is queued must still go out (busy() holds the reactor).
    self->flush();
  });
}

std::error_code link::write(fabric::remote_address dst, fabric::byte_pieces pieces) {
  return write_record(dst, pieces, nullptr);
}

std::error_code link::write_held(fabric::remote_address dst, fabric::byte_pieces pieces, const void* owner) {
  return write_record(dst, pieces, owner);
}

std::error_code link::write_record(fabric::remote_address dst, fabric::byte_pieces pieces, const void* owner) {
  if (failed()) return why_failed_;
  if (dst.key != peer_key_ || dst.address < peer_window_begin_) return make_error_code(error::protocol_violation);
  record_header h;
  h.kind = record_kind::write;
  h.key = dst.key;
  h.address = dst.address;
  h.length = total_size(pieces);
  if (h.length >= direct_payload_min) {
    borrow(h, pieces, owner);
    if (h.length >= send_at_once_min) {
      flush();
      bulk_seen();
    }
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

}  // namespace bellows::tcp
