#include "fabric/peer_proof.hpp"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>

#include <cstring>
#include <stdexcept>

namespace bellows::fabric {

nonce fresh_nonce() {
  nonce n;
  // Only fails when the system's random source is unusable: no handshake can be fresh then.
  if (RAND_bytes(n.data(), static_cast<int>(n.size())) != 1)
    throw std::runtime_error("bellows: the system's random source failed (RAND_bytes)");
  return n;
}

proof prove(std::string_view key, handshake_role role, const nonce& own, const nonce& peer, std::uint64_t own_link_key,
            std::uint64_t peer_link_key) {
  // The connecting side's values first in both directions' input, so both compute one layout.
  const bool connecting = role != handshake_role::accepting;
  const nonce& connector_nonce = connecting ? own : peer;
  const nonce& acceptor_nonce = connecting ? peer : own;
  const std::uint64_t keys[2] = {connecting ? own_link_key : peer_link_key, connecting ? peer_link_key : own_link_key};
  constexpr char label[] = "bellows peer proof v1";
  std::uint8_t input[sizeof label + 1 + 2 * sizeof(nonce) + sizeof keys];
  std::uint8_t* at = input;
  std::memcpy(at, label, sizeof label);
  at += sizeof label;
  *at++ = static_cast<std::uint8_t>(role);
  std::memcpy(at, connector_nonce.data(), connector_nonce.size());
  at += connector_nonce.size();
  std::memcpy(at, acceptor_nonce.data(), acceptor_nonce.size());
  at += acceptor_nonce.size();
  std::memcpy(at, keys, sizeof keys);

  proof out{};
  unsigned length = 0;
  if (HMAC(EVP_sha256(), key.data(), static_cast<int>(key.size()), input, sizeof input, out.data(), &length) ==
          nullptr ||
      length != out.size())
    throw std::runtime_error("bellows: HMAC-SHA256 failed");
  return out;
}

bool same_proof(const proof& a, const proof& b) noexcept { return CRYPTO_memcmp(a.data(), b.data(), a.size()) == 0; }

}  // namespace bellows::fabric
