#include "sim/sim_provider.hpp"

#include <algorithm>
#include <cstring>

namespace bellows::sim {

sim_provider::sim_provider(std::uint64_t arena_key, std::size_t budget_bytes)
    : arena_key_(arena_key), budget_(budget_bytes) {}

void sim_provider::connect(sim_provider* peer, tear_policy tear, doorbell_sink doorbell) {
  peer_ = peer;
  tear_ = std::move(tear);
  doorbell_ = std::move(doorbell);
}

proto::outcome<fabric::region> sim_provider::register_region(std::size_t length) {
  if (length == 0) return error::invalid_argument;
  if (length > budget_ || registered_ > budget_ - length) return error::budget_exhausted;
  const std::uint64_t handle = next_handle_++;
  // Addresses are never reused, so a stale key from a lying peer can never hit a new ring.
  const std::uint64_t address = next_address_;
  next_address_ += (length + 4095) & ~std::uint64_t{4095};
  auto& a = regions_[handle];
  a.bytes.assign(length, std::byte{0});
  a.address = address;
  by_address_[address] = handle;
  registered_ += length;
  return fabric::region{handle, arena_key_, address, a.bytes.data(), length};
}

void sim_provider::release_region(std::uint64_t handle) {
  auto it = regions_.find(handle);
  if (it == regions_.end()) return;
  registered_ -= it->second.bytes.size();
  by_address_.erase(it->second.address);
  regions_.erase(it);
}

std::byte* sim_provider::resolve(fabric::remote_address dst, std::size_t length) {
  if (dst.key != arena_key_) return nullptr;
  auto it = by_address_.upper_bound(dst.address);
  if (it == by_address_.begin()) return nullptr;
  --it;
  auto& a = regions_.at(it->second);
  const std::uint64_t offset = dst.address - a.address;
  if (offset > a.bytes.size() || length > a.bytes.size() - offset) return nullptr;
  return a.bytes.data() + offset;
}

bool sim_provider::place(fabric::remote_address dst, std::span<const std::byte> bytes) {
  std::byte* to = resolve(dst, bytes.size());
  if (to == nullptr) return false;
  std::memcpy(to, bytes.data(), bytes.size());
  return true;
}

std::error_code sim_provider::write(fabric::remote_address dst, fabric::byte_pieces pieces) {
  std::size_t length = 0;
  for (auto p : pieces) length += p.size();
  if (peer_ == nullptr || peer_->resolve(dst, length) == nullptr) return make_error_code(error::protocol_violation);

  std::vector<std::byte> bytes;
  bytes.reserve(length);
  for (auto p : pieces) bytes.insert(bytes.end(), p.begin(), p.end());
  // Placement is ordered: once one write is held back, every later one waits behind it.
  if (held_.empty()) {
    const std::size_t now = tear_ ? std::min(tear_(length), length) : length;
    if (now == length) {
      peer_->place(dst, bytes);
      return {};
    }
    peer_->place(dst, std::span<const std::byte>(bytes).first(now));
    held_.push_back({{dst.key, dst.address + now},
                     std::vector<std::byte>(bytes.begin() + static_cast<std::ptrdiff_t>(now), bytes.end())});
    return {};
  }
  held_.push_back({dst, std::move(bytes)});
  return {};
}

void sim_provider::flush() {
  while (!held_.empty()) {
    // The target may have been released meanwhile (the peer moved on); then the bytes vanish.
    peer_->place(held_.front().dst, held_.front().bytes);
    held_.pop_front();
  }
}

void sim_provider::ring_doorbell(std::uint32_t peer_channel) {
  if (doorbell_) doorbell_(peer_channel);
}

}  // namespace bellows::sim
