#pragma once
// A shm link: everything two processes share, set up once per pair of reactors and carrying any
// number of channels. Each side owns an arena the other maps; the peer writes frames, credits
// and acks into ours and rings our doorbell ring. A SOCK_SEQPACKET socket on an abstract name
// carries the arena and eventfd descriptors (SCM_RIGHTS), channel open/accept/detach, and, by
// closing, the news that the peer died.

#include "fabric/multiplexed_link.hpp"
#include "fabric/shm/arena.hpp"
#include "fabric/shm/doorbell_ring.hpp"

#include <bellows/error.hpp>

#include <asio/io_context.hpp>
#include <asio/posix/stream_descriptor.hpp>

#include <deque>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace bellows::shm {

struct link_options {
  std::size_t arena_bytes = std::size_t{16} << 30;
  bool allow_other_users = false;
  /// The reactor's eventfd, sent to the peer so that its doorbells can wake us.
  int wake_fd = -1;
};

/// The abstract socket name for shm://NAME.
std::string socket_name(const std::string& name);

class link final : public fabric::multiplexed_link {
 public:
  /// Client side: connects to shm://`name`; the handshake finishes in the background and
  /// channels opened meanwhile wait for it.
  static proto::outcome<std::shared_ptr<link>> connect(const asio::any_io_executor& io, const std::string& name,
                                                       const link_options& options, memory_budget& budget);
  /// Server side: a socket just accepted on a listening name.
  static proto::outcome<std::shared_ptr<link>> accept(const asio::any_io_executor& io, int fd,
                                                      const link_options& options, memory_budget& budget);
  ~link() override;

  /// Starts (or stops) reading the socket; a stopped link holds no outstanding work, so an
  /// io_context with nothing pending can return from run().
  void arm() override;
  void disarm() override;
  /// The io_context is being destroyed: drop the socket without touching its services again.
  void shutdown() override;

  /// Pops doorbells and reports them to endpoints; returns how many it found.
  std::size_t poll() override;
  bool prepare_to_sleep() override;
  void last_look() override;
  void woke_up() override;
  void trim() override { arena_.trim(); }
  /// Failed, or a link this side opened that no channel uses any more (its peer then sees the
  /// socket close).
  bool finished() const noexcept override { return failed() || (!name_.empty() && unused()); }
  const std::string& name() const noexcept { return name_; }

  proto::outcome<fabric::region> register_region(std::size_t length) override;
  void release_region(std::uint64_t handle) override;
  std::error_code write(fabric::remote_address dst, fabric::byte_pieces pieces) override;
  std::error_code write_frame(fabric::remote_address dst, fabric::byte_pieces body, fabric::remote_address trailer_dst,
                              std::span<const std::byte> trailer) override;
  std::error_code write_from_file(fabric::remote_address dst, std::span<const std::byte> prefix,
                                  fabric::file_piece piece) override;
  void ring_doorbell(std::uint32_t peer_channel) override;
  bool ring_doorbell_unless_polled(std::uint32_t peer_channel, fabric::polled_hint hint) override;
  bool may_skip_doorbells() const override { return true; }
  bool peer_fetches() const override { return peer_fetches_; }
  std::error_code fetch(std::uint64_t source, std::uint64_t guard, std::uint64_t guard_value,
                        std::span<std::byte> into) override;
  std::size_t registered_bytes() const override { return arena_.registered_bytes(); }

 private:
  struct outgoing {
    fabric::link_message message;
    std::vector<int> fds;
  };

  link(const asio::any_io_executor& io, int fd, arena local, const link_options& options);
  std::shared_ptr<link> self() { return std::static_pointer_cast<link>(shared_from_this()); }

  /// Where `length` bytes at `dst` of the peer's arena are mapped here, if all are the peer's.
  proto::outcome<std::byte*> peer_bytes(fabric::remote_address dst, std::uint64_t length);
  void start_handshake();
  void transmit(const fabric::link_message& m) override;
  void flush_outgoing();
  /// Reads what the socket holds, then waits for more unless a wait is out.
  void read_messages();
  /// Reads and handles what the socket holds now; never waits.
  void read_queued();
  void on_hello(const fabric::link_message& m) override;
  void fail(std::error_code ec) override;

  std::optional<asio::posix::stream_descriptor> socket_;  // reset when the io_context shuts down
  arena arena_;
  mapping peer_;
  std::uint64_t local_key_ = 0;
  /// The peer's process, when this side may read its memory (probed before our hello); else 0.
  int readable_peer_pid_ = 0;
  bool peer_fetches_ = false;  ///< the peer's hello said it may read ours
  int peer_wake_fd_ = -1;
  /// The descriptors that came with the peer's hello (arena memfd, eventfd), until it is taken.
  std::vector<int> hello_fds_;
  doorbell::producer peer_doorbells_;
  std::uint64_t doorbells_consumed_ = 0;
  link_options options_;
  std::string name_;
  bool armed_ = false;  // reading wanted; a wait cancelled by disarm() then re-armed is resumed
  bool reading_ = false;
  bool writing_ = false;
  std::deque<outgoing> outgoing_;
};

}  // namespace bellows::shm
