// The data path of a shm link: doorbells in (polled by the reactor) and out, registered memory,
// and one-sided writes into the peer's arena.
#include "fabric/shm/link.hpp"

#include "fabric/shm/bulk_copy.hpp"

#include <bellows/error.hpp>

#include <sys/uio.h>
#include <unistd.h>
#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstring>

namespace bellows::shm {

std::size_t link::poll() {
  if (state_ != state::ready) return 0;
  std::size_t found = 0;
  doorbell::drain(
      arena_.header(), doorbells_consumed_,
      [&](std::uint32_t id) {
        ++found;
        if (auto* endpoint = endpoint_of(id)) endpoint->on_doorbell();
      },
      [&] {
        ++found;
        for_each_endpoint([](fabric::channel_endpoint& e) { e.on_doorbell(); });
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

proto::outcome<std::byte*> link::peer_bytes(fabric::remote_address dst, std::uint64_t length) {
  if (state_ != state::ready) return error::connection_reset;
  if (dst.key != peer_key_ || dst.address < arena::header_bytes || dst.address > peer_.size() ||
      length > peer_.size() - dst.address || dst.address % 8 != 0)
    return error::protocol_violation;
  return peer_.base() + dst.address;
}

std::error_code link::write(fabric::remote_address dst, fabric::byte_pieces pieces) {
  std::size_t total = 0;
  for (auto p : pieces) total += p.size();
  auto to = peer_bytes(dst, total);
  if (!to) return to.failure();
  std::byte* out = *to;
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

std::error_code link::write_frame(fabric::remote_address dst, fabric::byte_pieces body,
                                  fabric::remote_address trailer_dst, std::span<const std::byte> trailer) {
  // The trailer goes first: the body's first word, stored last with release, publishes both,
  // and the peer reads a trailer only behind a header it has seen.
  auto tail = peer_bytes(trailer_dst, trailer.size());
  if (!tail) return tail.failure();
  std::memcpy(*tail, trailer.data(), trailer.size());
  return link::write(dst, body);
}

std::error_code link::write_from_file(fabric::remote_address dst, std::span<const std::byte> prefix,
                                      fabric::file_piece piece) {
  if (prefix.size() < 8) return provider::write_from_file(dst, prefix, piece);
  auto to = peer_bytes(dst, prefix.size() + piece.length);
  if (!to) return to.failure();
  std::byte* out = *to;
  // The file is read straight into the peer's ring. Its first word goes last, as in write(),
  // so a failed read leaves nothing the peer would take for a frame.
  std::memcpy(out + 8, prefix.data() + 8, prefix.size() - 8);
  if (auto ec = fabric::read_file_piece(piece, out + prefix.size())) return ec;
  std::uint64_t first = 0;
  std::memcpy(&first, prefix.data(), sizeof first);
  __atomic_store_n(reinterpret_cast<std::uint64_t*>(out), first, __ATOMIC_RELEASE);
  return {};
}

bool link::ring_doorbell_unless_polled(std::uint32_t peer_channel, fabric::polled_hint hint) {
  // Pairs with the peer's fence between clearing the hint and its last poll of the channel
  // (reactor::stop_polling_every_round): our frames are visible to it before we read the hint,
  // so either we see it cleared and ring, or its last poll finds the frames.
  __atomic_thread_fence(__ATOMIC_SEQ_CST);
  if (hint.word != nullptr && (__atomic_load_n(hint.word, __ATOMIC_RELAXED) & hint.mask) != 0) return false;
  ring_doorbell(peer_channel);
  return true;
}

void link::ring_doorbell(std::uint32_t peer_channel) {
  if (state_ != state::ready) return;
  if (doorbell::push(peer_.base(), peer_channel, peer_doorbells_)) {
    const std::uint64_t one = 1;
    [[maybe_unused]] auto n = ::write(peer_wake_fd_, &one, sizeof one);
  }
}

namespace {

/// Reads `length` bytes at `address` in process `pid` into `into`, all or an error.
std::error_code read_peer(int pid, std::uint64_t address, void* into, std::size_t length) {
  iovec local{into, length};
  iovec remote{reinterpret_cast<void*>(address), length};
  const ssize_t n = ::process_vm_readv(pid, &local, 1, &remote, 1, 0);
  if (n < 0) return {errno, std::system_category()};
  // Short only when the peer's memory ends partway: its buffer is gone.
  if (static_cast<std::size_t>(n) != length) return std::make_error_code(std::errc::bad_address);
  return {};
}

}  // namespace

std::error_code link::fetch(std::uint64_t source, std::uint64_t guard, std::uint64_t guard_value,
                            std::span<std::byte> into) {
  if (readable_peer_pid_ == 0 || state_ != state::ready)
    return std::make_error_code(std::errc::operation_not_permitted);
  if (auto ec = read_peer(readable_peer_pid_, source, into.data(), into.size())) return ec;
  // The guard is read after the bytes (a seqlock's reader): if it still holds the offer's value,
  // the sender had not let go of its buffer when we finished reading it.
  std::atomic_thread_fence(std::memory_order_seq_cst);
  std::uint64_t word = 0;
  if (auto ec = read_peer(readable_peer_pid_, guard, &word, sizeof word)) return ec;
  if (word != guard_value) return std::make_error_code(std::errc::operation_canceled);
  return {};
}

}  // namespace bellows::shm
