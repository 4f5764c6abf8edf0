#pragma once
// What a reactor hears from one RDMA device: a completion queue with its completion channel,
// and a shared receive queue whose receives catch the peers' doorbells (RDMA WRITE WITH
// IMMEDIATE, immediate = the receiving side's channel id; they place no bytes) and the few
// small messages SENT while a channel opens (handshake.hpp), each into a 64-byte slot. The reactor polls it while
// busy; to sleep it arms the queue (ibv_req_notify_cq) and waits on the channel's descriptor
// through Asio. Wake-ups may be spurious; events are acknowledged in batches.

#include "proto/outcome.hpp"

#include <infiniband/verbs.h>

#include <asio/io_context.hpp>
#include <asio/posix/stream_descriptor.hpp>

#include <array>
#include <cstdint>
#include <cstdlib>
#include <functional>
#include <memory>
#include <system_error>

namespace bellows::verbs {

/// One completion, reduced to what the link needs.
struct completion_event {
  enum class what { doorbell, message, write_done, failed } kind = what::doorbell;
  std::uint32_t qp_num = 0;
  std::uint32_t channel = 0;  ///< doorbell: the immediate
  std::uint64_t wr_id = 0;    ///< write_done and failed: the work request
  std::error_code ec;         ///< failed: operation_aborted for a flush, else what went wrong
  std::uint32_t length = 0;   ///< message: how many bytes of `bytes` it filled
  std::array<std::byte, 64> bytes{};
};

class completion_source final : public std::enable_shared_from_this<completion_source> {
 public:
  static constexpr int queue_depth = 4096;
  /// Each receive has a slot for a handshake message, so receives cost locked memory: 256 keep
  /// it at 16 KiB, a quarter of the 64 KiB that older kernels allow by default. A burst of more
  /// doorbells than that between two polls is not lost: RC retries the ones that found no
  /// receive (receiver not ready) until the reactor posted new ones.
  static constexpr int receives = 256;
  static constexpr std::size_t receive_bytes = 64;
  /// Receives' work request ids have this bit set (the rest is the slot); sends' never do.
  static constexpr std::uint64_t receive_tag = std::uint64_t{1} << 63;
  static bool is_receive(std::uint64_t wr_id) noexcept { return (wr_id & receive_tag) != 0; }

  static proto::outcome<std::shared_ptr<completion_source>> create(const asio::any_io_executor& io,
                                                                   ibv_context* context, ibv_pd* pd);
  ~completion_source();
  completion_source(const completion_source&) = delete;
  completion_source& operator=(const completion_source&) = delete;

  ibv_cq* queue() const noexcept { return cq_; }
  ibv_srq* shared_receive_queue() const noexcept { return srq_; }

  /// Takes what has completed, at most a batch, and reports each; returns how many.
  std::size_t poll(const std::function<void(const completion_event&)>& report);
  /// Asks for a notification of the next completion and calls `woken` when it comes. A
  /// completion that arrived before the request raises no notification: poll once more after
  /// this returns true, and cancel_sleep() if that finds work. False if arming failed.
  bool sleep_until_completion(std::function<void()> woken);
  void cancel_sleep();
  /// For a reactor that holds no work: arms the queue without an asio wait and returns the
  /// descriptor that becomes readable at the next completion (watched by the idle thread).
  /// Negative if arming failed.
  int notify_when_idle();
  /// After an idle wake: takes the channel's events so the descriptor reads empty again.
  void take_idle_events();
  bool sleeping() const noexcept { return sleeping_; }

 private:
  completion_source(const asio::any_io_executor& io, ibv_comp_channel* channel, ibv_cq* cq, ibv_srq* srq);
  bool register_slots(ibv_pd* pd);
  bool post_receive(std::uint64_t slot);
  void take_channel_events();
  bool idle_notified_ = false;

  ibv_comp_channel* channel_;
  ibv_cq* cq_;
  ibv_srq* srq_;
  struct slots_release {
    void operator()(std::byte* p) const noexcept { std::free(p); }
  };
  std::unique_ptr<std::byte, slots_release> slots_;
  ibv_mr* slots_mr_ = nullptr;
  asio::posix::stream_descriptor descriptor_;
  unsigned unacknowledged_events_ = 0;
  bool sleeping_ = false;
};

}  // namespace bellows::verbs
