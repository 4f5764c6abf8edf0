#include "fabric/verbs/cm_channel.hpp"

#include <bellows/error.hpp>

#include <asio/error.hpp>

#include <fcntl.h>
#include <cerrno>
#include <cstring>
#include <system_error>

namespace bellows::verbs {

proto::outcome<std::shared_ptr<cm_channel>> cm_channel::create(const asio::any_io_executor& io) {
  rdma_event_channel* channel = ::rdma_create_event_channel();
  if (channel == nullptr) return std::error_code(errno != 0 ? errno : ENODEV, std::system_category());
  const int flags = ::fcntl(channel->fd, F_GETFL);
  if (flags < 0 || ::fcntl(channel->fd, F_SETFL, flags | O_NONBLOCK) < 0) {
    const int e = errno;
    ::rdma_destroy_event_channel(channel);
    return std::error_code(e, std::system_category());
  }
  return std::shared_ptr<cm_channel>(new cm_channel(io, channel));
}

cm_channel::cm_channel(const asio::any_io_executor& io, rdma_event_channel* channel)
    : channel_(channel), descriptor_(io) {
  // The descriptor belongs to librdmacm: Asio watches it but must not close it.
  descriptor_.assign(::dup(channel->fd));
}

cm_channel::~cm_channel() {
  asio::error_code ignored;
  descriptor_.close(ignored);
  ::rdma_destroy_event_channel(channel_);
}

proto::outcome<rdma_cm_id*> cm_channel::create_id() {
  rdma_cm_id* id = nullptr;
  if (::rdma_create_id(channel_, &id, nullptr, RDMA_PS_TCP) != 0)
    return std::error_code(errno != 0 ? errno : ENOMEM, std::system_category());
  return id;
}

void cm_channel::watch(rdma_cm_id* id, handler h) {
  handlers_[id] = std::move(h);
  wait();
}

void cm_channel::forget(rdma_cm_id* id) {
  handlers_.erase(id);
  if (handlers_.empty() && waiting_) {
    asio::error_code ignored;
    descriptor_.cancel(ignored);  // nothing left to hear: hold no outstanding work
  }
}

void cm_channel::set_armed(bool on) {
  armed_ = on;
  if (armed_) return wait();
  if (waiting_) {
    asio::error_code ignored;
    descriptor_.cancel(ignored);
  }
}

void cm_channel::wait() {
  if (waiting_ || handlers_.empty() || !armed_) return;
  waiting_ = true;
  descriptor_.async_wait(asio::posix::descriptor_base::wait_read, [self = shared_from_this()](std::error_code ec) {
    self->waiting_ = false;
    if (ec && !(ec == asio::error::operation_aborted && self->armed_)) return;
    self->drain();
    self->wait();
  });
}

void cm_channel::drain() {
  rdma_cm_event* raw = nullptr;
  while (::rdma_get_cm_event(channel_, &raw) == 0) {
    cm_event e;
    e.type = raw->event;
    e.status = raw->status;
    e.id = raw->id;
    e.listen_id = raw->listen_id;
    const auto& conn = raw->param.conn;
    if (conn.private_data != nullptr && conn.private_data_len > 0) {
      const auto* bytes = static_cast<const std::byte*>(conn.private_data);
      e.private_data.assign(bytes, bytes + conn.private_data_len);
    }
    ::rdma_ack_cm_event(raw);
    rdma_cm_id* owner = e.type == RDMA_CM_EVENT_CONNECT_REQUEST ? e.listen_id : e.id;
    if (auto it = handlers_.find(owner); it != handlers_.end()) {
      auto h = it->second;  // the handler may forget its id
      h(e);
    } else if (e.type == RDMA_CM_EVENT_CONNECT_REQUEST) {
      ::rdma_reject(e.id, nullptr, 0);  // its listener is gone
      ::rdma_destroy_id(e.id);
    }
  }
}

std::error_code to_error(const cm_event& e) {
  switch (e.type) {
    case RDMA_CM_EVENT_REJECTED: return std::make_error_code(std::errc::connection_refused);
    case RDMA_CM_EVENT_UNREACHABLE:
    case RDMA_CM_EVENT_ADDR_ERROR:
    case RDMA_CM_EVENT_ROUTE_ERROR: return std::make_error_code(std::errc::host_unreachable);
    case RDMA_CM_EVENT_CONNECT_ERROR: return std::make_error_code(std::errc::connection_aborted);
    case RDMA_CM_EVENT_DISCONNECTED:
    case RDMA_CM_EVENT_DEVICE_REMOVAL: return make_error_code(error::connection_reset);
    default: return e.status != 0 ? std::error_code(-e.status, std::system_category()) : std::error_code{};
  }
}

}  // namespace bellows::verbs
