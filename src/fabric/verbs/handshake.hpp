#pragma once
// What the two sides of an rdma:// channel tell each other while opening it. rdma_cm's private
// data carries the opener's channel id, tier table and nonce on the connect request, and the
// acceptor's channel id and nonce on the accept (or a reason on a reject). No memory is named
// there: once the connection is up, each side binds memory windows to its queue pair and
// SENDs a grant (its control block and first ring, keyed to that queue pair alone) with the
// proof that it holds the pre-shared key. The opener grants first; the acceptor registers
// nothing until that grant (and its proof) checked out, and answers a bad one with a refusal.
//
// RDMA_PS_TCP allows 56 bytes on a request, so the tier table travels as powers of two, at
// most `max_tiers` of them. Everything here comes from the network: decoding validates every
// field, and the transport may pad the bytes with zeros, so only a minimum length is required.

#include "fabric/peer_proof.hpp"

#include <bellows/tier.hpp>

#include "proto/outcome.hpp"

#include <array>
#include <cstddef>
#include <cstdint>
#include <span>
#include <system_error>
#include <vector>

namespace bellows::verbs {

struct remote_block {
  std::uint32_t key = 0;
  std::uint64_t address = 0;
};

/// The connect request's private data.
struct open_request {
  std::uint32_t channel_id = 0;
  std::uint64_t max_message_size = 0;
  std::vector<tier> tiers;
  bool demands_proof = false;  ///< the opener holds a pre-shared key
  fabric::nonce nonce{};
};

/// The accept's private data.
struct open_acceptance {
  std::uint32_t channel_id = 0;
  fabric::nonce nonce{};
};

/// SENT by each side once the connection is up: where the peer may write, and the proof.
struct memory_grant {
  remote_block control;
  remote_block ring;
  fabric::proof proof{};  ///< zeros where no key is held
};

namespace handshake {

inline constexpr std::size_t request_bytes = 48;
inline constexpr std::size_t acceptance_bytes = 24;
inline constexpr std::size_t grant_bytes = 60;
inline constexpr std::size_t refusal_bytes = 12;
/// The largest message SENT over the queue pair: what a receive buffer must hold.
inline constexpr std::size_t largest_message = 64;
inline constexpr std::size_t max_tiers = 7;

/// Fails with error::invalid_argument for a table that cannot be written (too many tiers, a
/// size that is not a power of two).
proto::outcome<std::array<std::byte, request_bytes>> encode(const open_request& r);
std::array<std::byte, acceptance_bytes> encode(const open_acceptance& a);
/// The grant says who sends it, so one side's cannot be reflected back as the other's.
std::array<std::byte, grant_bytes> encode(const memory_grant& g, fabric::handshake_role from);
/// Why a request was refused: a bellows error or a system errno, sent back to the opener.
std::array<std::byte, refusal_bytes> encode_refusal(std::error_code why);

/// Fails with error::protocol_violation for anything that is not a well-formed request.
proto::outcome<open_request> decode_request(std::span<const std::byte> bytes);
proto::outcome<open_acceptance> decode_acceptance(std::span<const std::byte> bytes);
/// Fails with protocol_violation for anything but a well-formed grant from `from`.
proto::outcome<memory_grant> decode_grant(std::span<const std::byte> bytes, fabric::handshake_role from);
/// Whether the bytes are a refusal at all (a message may be a grant or a refusal).
bool is_refusal(std::span<const std::byte> bytes);
/// The reason a refusal names, or connection_refused when the bytes are not one of ours (the
/// peer's CM rejected the request itself: nobody listens on the port).
std::error_code decode_refusal(std::span<const std::byte> bytes);

}  // namespace handshake
}  // namespace bellows::verbs
