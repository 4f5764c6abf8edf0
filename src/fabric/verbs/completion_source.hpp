#pragma once
// What a reactor hears from one RDMA device: a completion queue with its completion channel,
// and a shared receive queue of zero-byte receives that catch the peers' doorbells (RDMA WRITE
// WITH IMMEDIATE, immediate = the receiving side's channel id). The reactor polls it while
// busy; to sleep it arms the queue (ibv_req_notify_cq) and waits on the channel's descriptor
// through Asio. Wake-ups may be spurious; events are acknowledged in batches.

#include "proto/outcome.hpp"

#include <infiniband/verbs.h>

#include <asio/io_context.hpp>
#include <asio/posix/stream_descriptor.hpp>

#include <cstdint>
#include <functional>
#include <memory>
#include <system_error>

namespace bellows::verbs {

/// One completion, reduced to what the link needs.
struct completion_event {
  enum class what { doorbell, write_done, failed } kind = what::doorbell;
  std::uint32_t qp_num = 0;
  std::uint32_t channel = 0;  ///< doorbell: the immediate
  std::uint64_t wr_id = 0;    ///< write_done and failed: the work request
  std::error_code ec;         ///< failed: operation_aborted for a flush, else what went wrong
};

class completion_source final : public std::enable_shared_from_this<completion_source> {
 public:
  static constexpr int queue_depth = 4096;
  static constexpr int doorbell_receives = 1024;
  /// The work request id of every doorbell receive; sends must use others.
  static constexpr std::uint64_t doorbell_wr_id = ~std::uint64_t{0};

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
  bool post_doorbell_receives(int count);
  void take_channel_events();
  bool idle_notified_ = false;

  ibv_comp_channel* channel_;
  ibv_cq* cq_;
  ibv_srq* srq_;
  asio::posix::stream_descriptor descriptor_;
  unsigned unacknowledged_events_ = 0;
  bool sleeping_ = false;
};

}  // namespace bellows::verbs
