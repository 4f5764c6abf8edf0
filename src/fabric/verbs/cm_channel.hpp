#pragma once
// rdma_cm's event channel driven by Asio: its descriptor is made non-blocking and watched with
// stream_descriptor::async_wait, events are copied out, acknowledged at once (rdma_destroy_id
// blocks on unacknowledged events) and handed to the handler of the id they concern. A
// connection request goes to its listening id's handler and carries the new id.

#include "proto/outcome.hpp"

#include <rdma/rdma_cma.h>

#include <asio/io_context.hpp>
#include <asio/posix/stream_descriptor.hpp>

#include <cstddef>
#include <functional>
#include <memory>
#include <unordered_map>
#include <vector>

namespace bellows::verbs {

struct cm_event {
  rdma_cm_event_type type = RDMA_CM_EVENT_ADDR_ERROR;
  int status = 0;
  rdma_cm_id* id = nullptr;  ///< for CONNECT_REQUEST, the new id of the incoming connection
  rdma_cm_id* listen_id = nullptr;
  std::vector<std::byte> private_data;
};

class cm_channel final : public std::enable_shared_from_this<cm_channel> {
 public:
  using handler = std::function<void(const cm_event&)>;

  static proto::outcome<std::shared_ptr<cm_channel>> create(const asio::any_io_executor& io);
  ~cm_channel();
  cm_channel(const cm_channel&) = delete;
  cm_channel& operator=(const cm_channel&) = delete;

  rdma_event_channel* get() const noexcept { return channel_; }
  /// A new id on this channel (RDMA_PS_TCP: reliable connected).
  proto::outcome<rdma_cm_id*> create_id();
  /// Events of `id` go to `h` from now on; watching starts with the first id.
  void watch(rdma_cm_id* id, handler h);
  /// No more events for `id` are delivered (call before rdma_destroy_id).
  void forget(rdma_cm_id* id);
  /// Stops (or resumes) reading events, so that an idle io_context holds no work for it;
  /// events that come meanwhile wait in the channel.
  void set_armed(bool on);

 private:
  explicit cm_channel(const asio::any_io_executor& io, rdma_event_channel* channel);
  void wait();
  void drain();

  rdma_event_channel* channel_;
  asio::posix::stream_descriptor descriptor_;
  std::unordered_map<rdma_cm_id*, handler> handlers_;
  bool waiting_ = false;
  bool armed_ = true;
};

/// What a failed connection event means to a bellows user.
std::error_code to_error(const cm_event& e);

}  // namespace bellows::verbs
