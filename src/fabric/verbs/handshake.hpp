#pragma once
// What rdma_cm's private data carries when a channel is opened over rdma://: the opener's
// channel id, control block, first ring and tier table on the connect request, the acceptor's
// on the accept, a reason on a reject. RDMA_PS_TCP allows 56 bytes on a request and 196 on an
// accept, so the tier table travels as powers of two, at most `max_tiers` of them. Everything
// here comes from the network: decoding validates every field, and the transport may pad the
// bytes with zeros, so only a minimum length is required.

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

struct open_request {
  std::uint32_t channel_id = 0;
  remote_block control;
  remote_block ring;
  std::uint64_t max_message_size = 0;
  std::vector<tier> tiers;
};

struct open_answer {
  std::uint32_t channel_id = 0;
  remote_block control;
  remote_block ring;
};

namespace handshake {

inline constexpr std::size_t request_bytes = 56;
inline constexpr std::size_t answer_bytes = 32;
inline constexpr std::size_t refusal_bytes = 12;
inline constexpr std::size_t max_tiers = 7;

/// Fails with error::invalid_argument for a table that cannot be written (too many tiers, a
/// size that is not a power of two).
proto::outcome<std::array<std::byte, request_bytes>> encode(const open_request& r);
std::array<std::byte, answer_bytes> encode(const open_answer& a);
/// Why a request was refused: a bellows error or a system errno, sent back to the opener.
std::array<std::byte, refusal_bytes> encode_refusal(std::error_code why);

/// Fails with error::protocol_violation for anything that is not a well-formed request.
proto::outcome<open_request> decode_request(std::span<const std::byte> bytes);
proto::outcome<open_answer> decode_answer(std::span<const std::byte> bytes);
/// The reason a refusal names, or connection_refused when the bytes are not one of ours (the
/// peer's CM rejected the request itself: nobody listens on the port).
std::error_code decode_refusal(std::span<const std::byte> bytes);

}  // namespace handshake
}  // namespace bellows::verbs
