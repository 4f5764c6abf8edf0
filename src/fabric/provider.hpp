#pragma once
// What a transport must offer bellows: registered memory the peer may write, ordered one-sided
// writes into the peer's registered memory, and a doorbell. shm, verbs and sim implement it.
// Calls are per frame or per registration, never per byte.

#include "fabric/file_piece.hpp"
#include "proto/outcome.hpp"

#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <system_error>
#include <vector>

namespace bellows::fabric {

/// Local memory registered for remote writes. `key` and `address` are what the peer names in a
/// write (shm: arena id and offset; verbs: rkey and virtual address).
struct region {
  std::uint64_t handle = 0;
  std::uint64_t key = 0;
  std::uint64_t address = 0;
  std::byte* data = nullptr;
  std::size_t length = 0;
};

/// A place in the peer's registered memory.
struct remote_address {
  std::uint64_t key = 0;
  std::uint64_t address = 0;
};

using byte_pieces = std::span<const std::span<const std::byte>>;

/// Where the peer says whether it polls a channel on every round, whether rung or not:
/// `*word & mask`, in our memory, written by the peer.
struct polled_hint {
  const std::uint64_t* word = nullptr;
  std::uint64_t mask = 0;
};

class provider {
 public:
  virtual ~provider() = default;

  /// Registers `length` zeroed bytes. Fails with error::budget_exhausted past the budget.
  virtual proto::outcome<region> register_region(std::size_t length) = 0;
  /// Unregisters and frees the memory; a provider backed by shared memory punches it out. For a
  /// lent region: the peer's writes stop landing in it at once (later ones are dropped), and
  /// the memory stays the application's.
  virtual void release_region(std::uint64_t handle) = 0;
  /// Whether lend() can succeed: messages too large for the rings' frames are then offered for
  /// placement straight into the receiver's buffer.
  virtual bool can_lend() const { return false; }
  /// Lets the peer write into `memory`, an application's receive buffer (not zeroed, not
  /// counted against the budget), until release_region(handle). None if this provider cannot.
  virtual std::optional<region> lend(std::span<std::byte> memory) {
    (void)memory;
    return std::nullopt;
  }
  /// Whether the peer can read this process's memory (shm: process_vm_readv is allowed to it):
  /// messages too large for the rings' frames are then offered with their address, and the
  /// peer reads them from the sender's buffer in one copy.
  virtual bool peer_fetches() const { return false; }
  /// Reads `into.size()` bytes at `source` in the peer's process into `into`, then the peer's
  /// word at `guard`: success only if everything was read and the word still holds
  /// `guard_value` (see proto::fetch_note). Anything else (not allowed, memory gone, the guard
  /// moved) is an error, and the bytes in `into` are to be ignored.
  virtual std::error_code fetch(std::uint64_t source, std::uint64_t guard, std::uint64_t guard_value,
                                std::span<std::byte> into) {
    (void)source, (void)guard, (void)guard_value, (void)into;
    return std::make_error_code(std::errc::operation_not_supported);
  }
  /// Copies `pieces`, back to back, to `dst` in the peer's memory. Writes issued through one
  /// provider are placed in issue order, each from its first byte to its last, so a flag
  /// written last is seen last. A destination outside what the peer registered is refused.
  /// The pieces must stay as they are until send_gathered() returns.
  virtual std::error_code write(remote_address dst, byte_pieces pieces) = 0;
  /// write(), for pieces that stay as they are until release_held(owner) (a message written
  /// into a buffer the peer lent: its send completes only once its bytes left, or on the peer's
  /// receipt). A provider may send them from there long after the batch, rather than copy what
  /// the first attempt did not take.
  virtual std::error_code write_held(remote_address dst, byte_pieces pieces, const void* /*owner*/) {
    return write(dst, pieces);
  }
  /// The pieces written with `owner` may go away once this returns: what is left of them is
  /// sent or copied now.
  virtual void release_held(const void* /*owner*/) {}
  /// A frame: `body` to `dst`, then `trailer` to `trailer_dst`, which the peer must not see
  /// before the body. Two write()s here; a provider that can publish both with one store
  /// (shm: the body's first word last) saves the second.
  virtual std::error_code write_frame(remote_address dst, byte_pieces body, remote_address trailer_dst,
                                      std::span<const std::byte> trailer) {
    if (auto ec = write(dst, body)) return ec;
    const std::span<const std::byte> tail[] = {trailer};
    return write(trailer_dst, tail);
  }
  /// As write() of `prefix` followed by the bytes of `piece`, read from the file now. A file
  /// that ends early fails with error::file_truncated, a failed read with its errno; then the
  /// peer sees nothing of this write. This one reads into a buffer of its own and calls write();
  /// a provider that maps the peer's memory reads straight into it instead.
  virtual std::error_code write_from_file(remote_address dst, std::span<const std::byte> prefix, file_piece piece);
  /// Whether bytes of earlier writes or doorbells still wait in this process to leave (tcp: what
  /// the socket did not take yet); they go only while the application runs the io_context.
  /// A provider whose writes are out of the process once issued (shm, a posted verbs write)
  /// never holds any.
  virtual bool holds_unsent() const { return false; }
  /// Sends what the writes and doorbells since the last call gathered (tcp: in one sendmsg).
  /// The channel's driver calls it at the end of each batch of actions and before asking
  /// holds_unsent(); until then a provider may refer to a write's pieces rather than copy them.
  virtual void send_gathered() {}
  /// Whether send_gathered() does anything; the driver skips the call where it does not (a
  /// virtual call on every batch cost shm's 8 B streaming a tenth).
  virtual bool gathers_writes() const { return false; }
  /// Tells the peer's reactor that channel `peer_channel` has something to look at.
  virtual void ring_doorbell(std::uint32_t peer_channel) = 0;
  /// ring_doorbell(), skipped when `hint` says the peer polls the channel anyway; true if rung.
  /// Only a provider that may_skip_doorbells() skips: it must read the hint after this side's
  /// writes are visible to the peer, so that a peer which clears the hint and then looks once
  /// more either finds those writes or was seen to have cleared it. This one always rings.
  virtual bool ring_doorbell_unless_polled(std::uint32_t peer_channel, polled_hint hint) {
    (void)hint;
    ring_doorbell(peer_channel);
    return true;
  }
  /// Whether polling a channel on every round can spare the peer its doorbells: only then is a
  /// reactor's polling worth announcing.
  virtual bool may_skip_doorbells() const { return false; }
  /// Bytes currently registered by this side.
  virtual std::size_t registered_bytes() const = 0;

 private:
  std::vector<std::byte> file_bounce_;  ///< write_from_file's buffer, kept for the next frame
};

}  // namespace bellows::fabric
