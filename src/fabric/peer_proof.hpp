#pragma once
// Proof that a peer holds the pre-shared key (channel_options::pre_shared_key), without sending
// it: each side sends a fresh nonce in its hello, then an HMAC-SHA256 under the key over its
// role, both nonces and both link keys. A recorded proof is worthless on the next connection
// (the other side's nonce is new), and one side's proof cannot be reflected back as the
// other's (the role is part of it). The cryptography is OpenSSL's libcrypto.

#include <array>
#include <cstdint>
#include <string_view>

namespace bellows::fabric {

using nonce = std::array<std::uint8_t, 16>;
using proof = std::array<std::uint8_t, 32>;

/// `second_connection`: the connecting side's proof that a second connection it opened to the
/// same link is its own (tcp/link_directions.cpp), which its handshake proof cannot stand for.
enum class handshake_role : std::uint8_t { connecting = 1, accepting = 2, second_connection = 3 };

/// A nonce from the system's cryptographic random source.
nonce fresh_nonce();

/// What `role` sends to prove it holds `key`: `own` nonce and link key are its own.
proof prove(std::string_view key, handshake_role role, const nonce& own, const nonce& peer, std::uint64_t own_link_key,
            std::uint64_t peer_link_key);

/// Compares in constant time.
bool same_proof(const proof& a, const proof& b) noexcept;

}  // namespace bellows::fabric
