#pragma once
// In-process provider for tests: each endpoint's registered memory is a set of heap buffers
// inside a notional arena (key = arena id, address = offset, like shm). Writes go to the peer
// endpoint's memory through an ordered queue that the simulator may hold back to tear them.

#include "fabric/provider.hpp"

#include <cstddef>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <vector>

namespace bellows::sim {

class sim_provider final : public fabric::provider {
 public:
  /// Called for each write as it is issued; returns how many leading bytes to place now (the
  /// rest waits for flush()). Placing everything is the normal case.
  using tear_policy = std::function<std::size_t(std::size_t length)>;
  using doorbell_sink = std::function<void(std::uint32_t peer_channel)>;

  sim_provider(std::uint64_t arena_key, std::size_t budget_bytes);

  void connect(sim_provider* peer, tear_policy tear, doorbell_sink doorbell);

  proto::outcome<fabric::region> register_region(std::size_t length) override;
  void release_region(std::uint64_t handle) override;
  std::error_code write(fabric::remote_address dst, fabric::byte_pieces pieces) override;
  void ring_doorbell(std::uint32_t peer_channel) override;
  std::size_t registered_bytes() const override { return registered_; }

  /// Places every held-back write, in order.
  void flush();
  bool holding_writes() const noexcept { return !held_.empty(); }
  /// A dead endpoint's unplaced writes never arrive.
  void drop_held_writes() { held_.clear(); }
  std::uint64_t arena_key() const noexcept { return arena_key_; }
  void set_budget(std::size_t bytes) noexcept { budget_ = bytes; }
  /// The range of addresses the peer may name: the whole arena.
  static constexpr std::uint64_t arena_size = std::uint64_t{1} << 40;

 private:
  struct allocation {
    std::vector<std::byte> bytes;
    std::uint64_t address;
  };
  struct held_write {
    fabric::remote_address dst;
    std::vector<std::byte> bytes;
  };

  /// Copies into this endpoint's memory if [address, address + n) lies inside one live region.
  bool place(fabric::remote_address dst, std::span<const std::byte> bytes);
  std::byte* resolve(fabric::remote_address dst, std::size_t length);

  std::uint64_t arena_key_;
  std::size_t budget_;
  std::size_t registered_ = 0;
  std::uint64_t next_handle_ = 1;
  std::uint64_t next_address_ = 4096;
  std::map<std::uint64_t, allocation> regions_;        // by handle
  std::map<std::uint64_t, std::uint64_t> by_address_;  // address -> handle
  sim_provider* peer_ = nullptr;
  tear_policy tear_;
  doorbell_sink doorbell_;
  std::deque<held_write> held_;
};

}  // namespace bellows::sim
