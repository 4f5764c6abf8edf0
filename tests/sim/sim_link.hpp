#pragma once
// An in-process link for tests: two ends, each with simulated registered memory (sim_provider),
// served by real reactors, so that channels with the public API run over it. The test holds
// the timing: it sees every write before it is placed and may place only part of it, hold
// doorbells back, or kill the link at that exact moment, which two real processes cannot do.

#include "fabric/link.hpp"
#include "fabric/poller.hpp"
#include "sim/sim_provider.hpp"

#include <bellows/tier.hpp>

#include <asio/io_context.hpp>

#include <functional>
#include <memory>
#include <system_error>
#include <utility>
#include <vector>

namespace bellows::sim {

/// What a write is for, judged by where it lands in the peer's memory.
enum class write_target { ring, credit, flags, ack };

struct link_write {
  std::uint32_t peer_channel = 0;  ///< the peer's id of the channel written to (0: a ring)
  write_target target = write_target::ring;
  fabric::remote_address dst;
  std::size_t length = 0;
};

class sim_link final : public fabric::link, public fabric::poller, public std::enable_shared_from_this<sim_link> {
 public:
  /// Called for every write this end issues, before it is placed; returns how many leading
  /// bytes to place now. The rest, and every later write, wait for release_writes().
  using write_hook = std::function<std::size_t(const link_write&)>;

  /// Two connected ends; each end's reactor is woken through `wake_fd` (the reactor's eventfd).
  static std::pair<std::shared_ptr<sim_link>, std::shared_ptr<sim_link>> make_pair(asio::io_context& io_a,
                                                                                   int wake_fd_a, std::size_t budget_a,
                                                                                   asio::io_context& io_b,
                                                                                   int wake_fd_b, std::size_t budget_b);

  /// Carves a channel's control blocks and first rings out of both ends, as the shm handshake
  /// would, and returns each side's set-up.
  static std::pair<fabric::channel_setup, fabric::channel_setup> open_channel(sim_link& a, sim_link& b,
                                                                              const std::vector<tier>& tiers,
                                                                              std::uint64_t max_message_size);

  // Faults, acting on what this end sends.
  void set_write_hook(write_hook hook) { write_hook_ = std::move(hook); }
  void release_writes() { provider_.flush(); }
  /// While held, doorbells this end rings are kept and delivered by release_doorbells().
  void hold_doorbells(bool on) { holding_doorbells_ = on; }
  void release_doorbells();
  /// Both ends fail with connection_reset, as when a peer process dies: writes still held are
  /// lost. Reported through each io_context, never from inside the caller.
  void kill();
  void set_budget(std::size_t bytes) { provider_.set_budget(bytes); }
  /// The next send_gathered() fails this end at once, inside the call, as a tcp link does when
  /// its sendmsg finds the connection reset (the peer is not told).
  void fail_in_next_send_gathered() { fail_in_send_gathered_ = true; }

  // fabric::link
  void attach(std::uint32_t local_id, fabric::channel_endpoint* endpoint) override;
  void send_detach(std::uint32_t peer_id) override;
  void retire(std::uint32_t local_id, std::vector<std::uint64_t> regions) override;
  bellows::endpoint peer_endpoint() const override { return {"sim", {}, {}, {}, 0}; }

  // fabric::poller
  std::size_t poll() override;
  bool prepare_to_sleep() override;
  void woke_up() override { sleeping_ = false; }
  void arm() override {}
  void disarm() override {}
  void shutdown() override { failed_ = true; }
  bool finished() const noexcept override { return failed_; }
  bool unused() const noexcept;

  // fabric::provider
  proto::outcome<fabric::region> register_region(std::size_t length) override;
  void release_region(std::uint64_t handle) override { provider_.release_region(handle); }
  std::error_code write(fabric::remote_address dst, fabric::byte_pieces pieces) override;
  void ring_doorbell(std::uint32_t peer_channel) override;
  void send_gathered() override;
  bool gathers_writes() const override { return true; }
  std::size_t registered_bytes() const override { return provider_.registered_bytes(); }

 private:
  struct channel_slot {
    fabric::channel_endpoint* endpoint = nullptr;
    fabric::region control;
    bool in_use = false;
    bool retired = false;
    bool peer_detached = false;
    std::vector<std::uint64_t> graveyard;
  };

  sim_link(asio::io_context& io, int wake_fd, std::uint64_t arena_key, std::size_t budget);
  channel_slot* slot(std::uint32_t id);
  void free_slot(std::uint32_t id);
  void on_detach(std::uint32_t id);
  void fail(std::error_code ec);
  link_write classify(fabric::remote_address dst, std::size_t length) const;
  void deliver_doorbell(std::uint32_t channel);
  void wake();

  asio::io_context& io_;
  int wake_fd_;
  sim_provider provider_;
  std::weak_ptr<sim_link> peer_;
  std::vector<channel_slot> slots_;  // index = id - 1
  std::vector<std::uint32_t> doorbells_;
  std::vector<std::uint32_t> held_doorbells_;
  write_hook write_hook_;
  std::size_t place_now_ = SIZE_MAX;
  bool holding_doorbells_ = false;
  bool fail_in_send_gathered_ = false;
  bool sleeping_ = false;
  bool failed_ = false;
  bool killed_ = false;
};

}  // namespace bellows::sim
