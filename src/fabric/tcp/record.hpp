#pragma once
// What travels on a tcp link's stream: records, each a fixed header and its payload. A write
// record carries the bytes of one provider write, which the receiving link places into its own
// registered memory; a doorbell record names a channel; a control record carries one control
// message (fabric/control_message.hpp); a padding record is skipped (copy_alignment.hpp says why
// a sender puts one ahead of a large write). Records are placed in the order they were sent,
// which gives the provider's ordering promise (fabric/provider.hpp) for free.
//
// A link that carries large writes moves each direction to a connection of its own (see
// link_directions.cpp): the connecting side opens a second connection whose only record of its
// own is a bind, and once the accepting side says it is bound, ends its records on the first
// with `moved`.

#include "fabric/control_message.hpp"
#include "fabric/peer_proof.hpp"

#include <cstdint>

namespace bellows::tcp {

enum class record_kind : std::uint32_t {
  control = 1,        ///< payload: one link_message
  write = 2,          ///< payload: `length` bytes for `address` under `key` in the receiver's memory
  doorbell = 3,       ///< `channel`: the receiver's channel to look at; no payload
  padding = 4,        ///< `length` bytes to skip, at most max_padding: places the next payload well
                      ///< within a page for the kernel's copies (copy_alignment.hpp)
  bind = 5,           ///< first record of a connecting side's second connection: `key` is the accepting
                      ///< link's key, `address` the connecting link's; payload: a fabric::proof for
                      ///< handshake_role::second_connection if the link was proven with a key, else
                      ///< zeros
  second_opened = 6,  ///< connecting side: my second connection is open, take it; no payload
  second_bound = 7,   ///< accepting side: your second connection is bound to this link; no payload
  moved = 8,          ///< the connecting side's last record on its first connection: the rest of its
                      ///< records come on its second; no payload
};

struct record_header {
  record_kind kind = record_kind::control;
  std::uint32_t channel = 0;
  std::uint64_t key = 0;
  std::uint64_t address = 0;
  std::uint64_t length = 0;
};
static_assert(sizeof(record_header) == 32);

inline constexpr std::uint64_t max_padding = 4096;
/// A bind record's bytes, header and proof: all an accepted connection reads before it knows
/// whether it is a link's second connection.
inline constexpr std::size_t bind_record_bytes = sizeof(record_header) + sizeof(fabric::proof);

/// Payloads at least this long are sent from the caller's memory and received straight into the
/// ring; shorter ones are copied through the link's buffers, which batches them into one call.
inline constexpr std::size_t direct_payload_min = 16 * 1024;
/// A write this large leaves at once rather than with the rest of its batch: its bytes cost far
/// more than the system call saved, and are under way while the batch goes on.
inline constexpr std::size_t send_at_once_min = 256 * 1024;

}  // namespace bellows::tcp
