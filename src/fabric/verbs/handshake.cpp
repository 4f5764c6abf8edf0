#include "fabric/verbs/handshake.hpp"

#include "proto/tier_table.hpp"

#include <bellows/error.hpp>

#include <bit>
#include <cstring>

namespace bellows::verbs::handshake {
namespace {

// "bvr1", "bva1", "bvx1": request, answer, refusal of version 1.
constexpr std::uint32_t request_magic = 0x31727662;
constexpr std::uint32_t answer_magic = 0x31617662;
constexpr std::uint32_t refusal_magic = 0x31787662;
constexpr std::uint32_t bellows_category = 1;
constexpr std::uint32_t system_category = 2;

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
  w.put(r.control.key);
  w.put(r.control.address);
  w.put(r.ring.key);
  w.put(r.ring.address);
  w.put(r.max_message_size);
  w.put(static_cast<std::uint8_t>(r.tiers.size()));
  for (const tier& t : r.tiers) {
    if (!std::has_single_bit(t.slot_size) || !std::has_single_bit(t.slot_count))
      return make_error_code(error::invalid_argument);
    w.put(static_cast<std::uint8_t>(std::countr_zero(t.slot_size)));
    w.put(static_cast<std::uint8_t>(std::countr_zero(t.slot_count)));
  }
  return out;
}

std::array<std::byte, answer_bytes> encode(const open_answer& a) {
  std::array<std::byte, answer_bytes> out{};
  writer w(out);
  w.put(answer_magic);
  w.put(a.channel_id);
  w.put(a.control.key);
  w.put(a.control.address);
  w.put(a.ring.key);
  w.put(a.ring.address);
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
  q.control.key = r.get<std::uint32_t>();
  q.control.address = r.get<std::uint64_t>();
  q.ring.key = r.get<std::uint32_t>();
  q.ring.address = r.get<std::uint64_t>();
  q.max_message_size = r.get<std::uint64_t>();
  const auto count = r.get<std::uint8_t>();
  if (q.channel_id == 0 || count == 0 || count > max_tiers || !plausible(q.control) || !plausible(q.ring))
    return violation();
  for (unsigned i = 0; i < count; ++i) {
    const auto size_log = r.get<std::uint8_t>();
    const auto count_log = r.get<std::uint8_t>();
    if (size_log > 31 || count_log > 31) return violation();
    q.tiers.push_back({std::uint32_t{1} << size_log, std::uint32_t{1} << count_log});
  }
  if (!proto::tier_table::make(q.tiers)) return violation();
  return q;
}

proto::outcome<open_answer> decode_answer(std::span<const std::byte> bytes) {
  if (bytes.size() < answer_bytes) return violation();
  reader r(bytes);
  if (r.get<std::uint32_t>() != answer_magic) return violation();
  open_answer a;
  a.channel_id = r.get<std::uint32_t>();
  a.control.key = r.get<std::uint32_t>();
  a.control.address = r.get<std::uint64_t>();
  a.ring.key = r.get<std::uint32_t>();
  a.ring.address = r.get<std::uint64_t>();
  if (a.channel_id == 0 || !plausible(a.control) || !plausible(a.ring)) return violation();
  return a;
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
