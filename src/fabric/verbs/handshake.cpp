#include "fabric/verbs/handshake.hpp"

#include "proto/tier_table.hpp"

#include <bellows/error.hpp>

#include <bit>
#include <cstring>

namespace bellows::verbs::handshake {
namespace {

// "bvr2", "bva2", "bvo2", "bvt2", "bvx1": request, acceptance, the opener's grant, the
// acceptor's grant, refusal. Version 2 named no memory before the connection is up.
constexpr std::uint32_t request_magic = 0x32727662;
constexpr std::uint32_t acceptance_magic = 0x32617662;
constexpr std::uint32_t opener_grant_magic = 0x326f7662;
constexpr std::uint32_t acceptor_grant_magic = 0x32747662;
constexpr std::uint32_t refusal_magic = 0x31787662;
constexpr std::uint32_t bellows_category = 1;
constexpr std::uint32_t system_category = 2;

std::uint32_t grant_magic(fabric::handshake_role from) {
  return from == fabric::handshake_role::connecting ? opener_grant_magic : acceptor_grant_magic;
}

class writer {
 public:
  explicit writer(std::span<std::byte> out) : out_(out) {}
  template <class T>
  void put(T value) {
    std::memcpy(out_.data() + at_, &value, sizeof value);
    at_ += sizeof value;
  }

 private:
  std::span<std::byte> out_;
  std::size_t at_ = 0;
};

class reader {
 public:
  explicit reader(std::span<const std::byte> in) : in_(in) {}
  template <class T>
  T get() {
    T value;
    std::memcpy(&value, in_.data() + at_, sizeof value);
    at_ += sizeof value;
    return value;
  }

 private:
  std::span<const std::byte> in_;
  std::size_t at_ = 0;
};

std::error_code violation() { return make_error_code(error::protocol_violation); }

bool plausible(const remote_block& b) { return b.address != 0 && b.address % 64 == 0; }

}  // namespace

proto::outcome<std::array<std::byte, request_bytes>> encode(const open_request& r) {
  if (r.tiers.empty() || r.tiers.size() > max_tiers) return make_error_code(error::invalid_argument);
  std::array<std::byte, request_bytes> out{};
  writer w(out);
  w.put(request_magic);
  w.put(r.channel_id);
  w.put(r.max_message_size);
  w.put(static_cast<std::uint8_t>(r.demands_proof ? 1 : 0));
  w.put(r.nonce);
  w.put(static_cast<std::uint8_t>(r.tiers.size()));
  for (const tier& t : r.tiers) {
    if (!std::has_single_bit(t.slot_size) || !std::has_single_bit(t.slot_count))
      return make_error_code(error::invalid_argument);
    w.put(static_cast<std::uint8_t>(std::countr_zero(t.slot_size)));
    w.put(static_cast<std::uint8_t>(std::countr_zero(t.slot_count)));
  }
  return out;
}

std::array<std::byte, acceptance_bytes> encode(const open_acceptance& a) {
  std::array<std::byte, acceptance_bytes> out{};
  writer w(out);
  w.put(acceptance_magic);
  w.put(a.channel_id);
  w.put(a.nonce);
  return out;
}

std::array<std::byte, grant_bytes> encode(const memory_grant& g, fabric::handshake_role from) {
  std::array<std::byte, grant_bytes> out{};
  writer w(out);
  w.put(grant_magic(from));
  w.put(g.control.key);
  w.put(g.control.address);
  w.put(g.ring.key);
  w.put(g.ring.address);
  w.put(g.proof);
  return out;
}

std::array<std::byte, refusal_bytes> encode_refusal(std::error_code why) {
  std::array<std::byte, refusal_bytes> out{};
  writer w(out);
  w.put(refusal_magic);
  w.put(why.category() == error_category() ? bellows_category : system_category);
  w.put(static_cast<std::uint32_t>(why.value()));
  return out;
}

proto::outcome<open_request> decode_request(std::span<const std::byte> bytes) {
  if (bytes.size() < request_bytes) return violation();
  reader r(bytes);
  if (r.get<std::uint32_t>() != request_magic) return violation();
  open_request q;
  q.channel_id = r.get<std::uint32_t>();
  q.max_message_size = r.get<std::uint64_t>();
  const auto demands_proof = r.get<std::uint8_t>();
  q.nonce = r.get<fabric::nonce>();
  const auto count = r.get<std::uint8_t>();
  if (q.channel_id == 0 || demands_proof > 1 || count == 0 || count > max_tiers) return violation();
  q.demands_proof = demands_proof == 1;
  for (unsigned i = 0; i < count; ++i) {
    const auto size_log = r.get<std::uint8_t>();
    const auto count_log = r.get<std::uint8_t>();
    if (size_log > 31 || count_log > 31) return violation();
    q.tiers.push_back({std::uint32_t{1} << size_log, std::uint32_t{1} << count_log});
  }
  if (!proto::tier_table::make(q.tiers)) return violation();
  return q;
}

proto::outcome<open_acceptance> decode_acceptance(std::span<const std::byte> bytes) {
  if (bytes.size() < acceptance_bytes) return violation();
  reader r(bytes);
  if (r.get<std::uint32_t>() != acceptance_magic) return violation();
  open_acceptance a;
  a.channel_id = r.get<std::uint32_t>();
  a.nonce = r.get<fabric::nonce>();
  if (a.channel_id == 0) return violation();
  return a;
}

proto::outcome<memory_grant> decode_grant(std::span<const std::byte> bytes, fabric::handshake_role from) {
  if (bytes.size() < grant_bytes) return violation();
  reader r(bytes);
  if (r.get<std::uint32_t>() != grant_magic(from)) return violation();
  memory_grant g;
  g.control.key = r.get<std::uint32_t>();
  g.control.address = r.get<std::uint64_t>();
  g.ring.key = r.get<std::uint32_t>();
  g.ring.address = r.get<std::uint64_t>();
  g.proof = r.get<fabric::proof>();
  if (!plausible(g.control) || !plausible(g.ring)) return violation();
  return g;
}

bool is_refusal(std::span<const std::byte> bytes) {
  if (bytes.size() < refusal_bytes) return false;
  return reader(bytes).get<std::uint32_t>() == refusal_magic;
}

std::error_code decode_refusal(std::span<const std::byte> bytes) {
  const auto refused = std::make_error_code(std::errc::connection_refused);
  if (bytes.size() < refusal_bytes) return refused;
  reader r(bytes);
  if (r.get<std::uint32_t>() != refusal_magic) return refused;
  const auto category = r.get<std::uint32_t>();
  const auto value = static_cast<int>(r.get<std::uint32_t>());
  if (value == 0) return refused;
  if (category == bellows_category) return {value, error_category()};
  if (category == system_category) return {value, std::system_category()};
  return refused;
}

}  // namespace bellows::verbs::handshake
