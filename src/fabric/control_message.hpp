#pragma once
// The control messages of a link that carries many channels (fabric/multiplexed_link.hpp):
// hello (and the proof of a pre-shared key), and opening, accepting, refusing and detaching
// channels. Each arrives whole: shm sends
// one per SOCK_SEQPACKET message, tcp one per control record on its stream.

#include <bellows/tier.hpp>

#include "proto/tier_table.hpp"

#include <cstdint>

namespace bellows::fabric {

inline constexpr std::uint32_t link_magic = 0x62656c73;  // "bels"
inline constexpr std::uint32_t link_version = 4;

enum class message_kind : std::uint32_t {
  hello = 1,      ///< key; shm: arena size, and it carries the arena memfd and wake-up eventfd
  open = 2,       ///< first = opener's channel id; control, ring; tiers, value = max message size
  accepted = 3,   ///< first = opener's id, second = acceptor's id; control, ring
  refused = 4,    ///< first = opener's id; value = error code, second = its category (see below)
  detach = 5,     ///< first = the receiver's channel id: the sender will not write into it again
  withdraw = 6,   ///< first = opener's id: the open is taken back; unread, it is refused unseen
  key_proof = 7,  ///< tcp, after both hellos when a key is set: proof (fabric/peer_proof.hpp)
};

/// A hello's `second`: this side holds a pre-shared key and will send, and demand, a proof.
inline constexpr std::uint32_t hello_demands_proof = 1;
/// A hello's `second` (shm): this side may read the peer's memory (process_vm_readv), so the
/// peer may offer it large messages to fetch.
inline constexpr std::uint32_t hello_reads_peer_memory = 2;

/// A refusal's `second`: the code is a bellows::error; otherwise it is a system error.
inline constexpr std::uint32_t refusal_in_bellows_category = 1;

struct link_message {
  std::uint32_t magic = link_magic;
  message_kind kind = message_kind::hello;
  std::uint32_t first = 0;
  std::uint32_t second = 0;
  std::uint64_t control = 0;
  std::uint64_t ring = 0;
  std::uint64_t value = 0;
  std::uint64_t key = 0;
  std::uint32_t version = link_version;
  std::uint32_t tier_count = 0;
  tier tiers[proto::max_tiers] = {};
  std::uint8_t nonce[16] = {};  ///< hello: this side's fresh nonce when it demands a proof
  std::uint8_t mac[32] = {};    ///< key_proof: the HMAC
};

}  // namespace bellows::fabric
