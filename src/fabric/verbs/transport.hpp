#pragma once
// Everything one reactor uses on one RDMA device: a protection domain on rdma_cm's context of
// the device, the registration pool, the completion source (CQ, completion channel, SRQ of
// receives for doorbells and handshake grants), a staging ring for frames too large to post inline, and the queue-pair
// links, found by queue pair number when a completion names one. The reactor polls it while
// busy and sleeps on its completion channel; QP async events fail the link they name.

#include "fabric/memory_budget.hpp"
#include "fabric/verbs/completion_source.hpp"
#include "fabric/verbs/registration_pool.hpp"

#include <rdma/rdma_cma.h>

#include <asio/io_context.hpp>
#include <asio/posix/stream_descriptor.hpp>
#include <asio/steady_timer.hpp>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <deque>
#include <memory>
#include <optional>
#include <unordered_map>
#include <utility>
#include <vector>

namespace bellows::verbs {

class qp_link;

class transport final : public std::enable_shared_from_this<transport> {
 public:
  /// Work requests a queue pair may have outstanding; every `signal_interval`-th is signalled
  /// (as is every staged write), so the rest cost no completion at all.
  static constexpr std::uint32_t send_queue_depth = 64;
  static constexpr std::uint32_t signal_interval = 16;
  static constexpr std::size_t first_staging_bytes = std::size_t{1} << 20;

  /// `wake_fd` is the reactor's eventfd, written when a completion ends its sleep. While armed,
  /// every `probe_interval` (zero: never) each quiet link to another host probes its peer
  /// (liveness.hpp); with no such link, no timer runs.
  static proto::outcome<std::shared_ptr<transport>> create(const asio::any_io_executor& io, ibv_context* context,
                                                           fabric::memory_budget& budget, int wake_fd,
                                                           std::chrono::milliseconds probe_interval);
  ~transport();
  transport(const transport&) = delete;
  transport& operator=(const transport&) = delete;

  ibv_context* context() const noexcept { return context_; }
  registration_pool& pool() noexcept { return pool_; }
  ibv_pd* protection_domain() const noexcept { return pd_.get(); }

  /// Creates `id`'s RC queue pair on this transport's CQ and SRQ; returns the inline limit
  /// the device granted.
  proto::outcome<std::uint32_t> create_queue_pair(rdma_cm_id* id);
  /// Completions and async events of the link's queue pair go to it until remove().
  void add(const std::shared_ptr<qp_link>& link);
  /// The link closed; `signalled_outstanding` of its requests will never be reported.
  void remove(std::uint32_t qp_num, std::size_t signalled_outstanding);
  /// A link broke inside a channel's call; the channel hears of it from the next poll().
  void report_failure_later(std::uint32_t qp_num, std::error_code ec);

  /// Takes completions: doorbells go to their links' endpoints, send completions free queue
  /// slots and staging. Returns how many it found (plus those reap_sends() kept).
  std::size_t poll();
  /// Takes completions without calling into any channel (from inside a link's write, which
  /// must wait for queue room): doorbells and failures are kept for the next poll().
  void reap_sends();
  /// Arms the completion channel; false when a completion is already waiting.
  bool prepare_to_sleep();
  bool prepare_to_idle(std::vector<int>& descriptors);
  void woke_up() { source_->take_idle_events(); }
  void arm();
  void disarm();
  /// The io_context is going away: let go of its descriptors without touching its services.
  void shutdown();
  /// Links are still flushing their last writes before they close.
  bool busy() const noexcept { return closing_links_ != 0; }
  std::size_t links() const noexcept { return links_.size(); }
  void closing_started() noexcept { ++closing_links_; }
  void closing_finished() noexcept { --closing_links_; }

  /// Signalled work requests the CQ still has room for (each may produce one completion).
  bool completion_room() const noexcept { return signalled_outstanding_ < signalled_capacity_; }
  void signalled_posted() noexcept { ++signalled_outstanding_; }
  void signalled_retired(std::size_t n) noexcept { signalled_outstanding_ -= std::min(n, signalled_outstanding_); }

  /// Room for `bytes` in the registered staging ring, for the write with index `wr_index` of
  /// queue pair `qp_num`; released when that write completes. Null when the ring is full
  /// (reap and retry) or could not be registered even at the frame's own size (`ec` says why).
  struct staging_chunk {
    std::byte* data = nullptr;
    std::uint32_t local_key = 0;
  };
  staging_chunk stage(std::size_t bytes, std::uint32_t qp_num, std::uint64_t wr_index, std::error_code& ec);

 private:
  struct staged_write {
    std::size_t begin;
    std::size_t end;
    std::uint32_t qp_num;
    std::uint64_t wr_index;
    bool done = false;
  };

  transport(const asio::any_io_executor& io, ibv_context* context, ibv_pd* pd, fabric::memory_budget& budget,
            int wake_fd, std::chrono::milliseconds probe_interval);
  std::size_t take(bool dispatch);
  void handle(const completion_event& e, bool dispatch);
  void sends_completed(std::uint32_t qp_num, std::uint64_t up_to);
  void release_staging();
  /// A new staging ring of `wanted` bytes, or of `needed` where `wanted` cannot be registered.
  std::error_code replace_staging(std::size_t wanted, std::size_t needed);
  void watch_async_events();
  void take_async_events();
  void schedule_probes();
  std::shared_ptr<qp_link> find(std::uint32_t qp_num) const;

  struct pd_release {
    void operator()(ibv_pd* pd) const noexcept { ::ibv_dealloc_pd(pd); }
  };

  ibv_context* context_;
  std::unique_ptr<ibv_pd, pd_release> pd_;  // first member: everything below lives in it
  registration_pool pool_;
  std::shared_ptr<completion_source> source_;
  asio::posix::stream_descriptor async_events_;
  int wake_fd_;
  bool armed_ = false;
  bool async_waiting_ = false;
  std::chrono::milliseconds probe_interval_;
  std::optional<asio::steady_timer> probe_timer_;  // reset by shutdown(), while its service lives
  bool probes_scheduled_ = false;
  std::unordered_map<std::uint32_t, std::shared_ptr<qp_link>> links_;
  std::vector<completion_event> kept_;
  std::vector<std::pair<std::uint32_t, std::error_code>> late_failures_;
  std::size_t closing_links_ = 0;
  std::size_t signalled_outstanding_ = 0;
  std::size_t signalled_capacity_ = 0;

  // Outside the registration pool and the budget: a fixed cost per reactor and device, like the
  // CQ, and a channel must never fail a send because another one holds the budget.
  std::unique_ptr<std::byte, void (*)(void*)> staging_memory_{nullptr, std::free};
  ibv_mr* staging_mr_ = nullptr;
  std::size_t staging_capacity_ = 0;
  std::size_t staging_refused_ = SIZE_MAX;  // the smallest size whose registration failed
  std::size_t staging_head_ = 0;            // next free byte
  std::size_t staging_tail_ = 0;            // oldest byte still in flight
  std::deque<staged_write> staged_;
};

}  // namespace bellows::verbs
