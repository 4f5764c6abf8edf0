#pragma once
// An RDMA device opened through rdma-core: its verbs context and one protection domain, which
// every registration and queue pair of this process on that device shares.

#include "proto/outcome.hpp"

#include <infiniband/verbs.h>

#include <memory>
#include <string>

namespace bellows::verbs {

class device {
 public:
  /// Opens the device called `name`, or the first one when `name` is empty. Fails with
  /// std::errc::no_such_device when rdma-core finds none (no RDMA hardware, no rxe, no driver).
  static proto::outcome<std::unique_ptr<device>> open(const std::string& name = {});
  ~device();
  device(const device&) = delete;
  device& operator=(const device&) = delete;

  ibv_context* context() const noexcept { return context_; }
  ibv_pd* protection_domain() const noexcept { return pd_; }
  const std::string& name() const noexcept { return name_; }

 private:
  device(ibv_context* context, ibv_pd* pd, std::string name) noexcept
      : context_(context), pd_(pd), name_(std::move(name)) {}

  ibv_context* context_;
  ibv_pd* pd_;
  std::string name_;
};

}  // namespace bellows::verbs
