#include "fabric/verbs/device.hpp"

#include <cerrno>
#include <system_error>

namespace bellows::verbs {

proto::outcome<std::unique_ptr<device>> device::open(const std::string& name) {
  int count = 0;
  // Without RDMA in the kernel the list itself fails (ENOSYS): to the caller that is the same
  // as a machine without a device.
  ibv_device** list = ::ibv_get_device_list(&count);
  if (list == nullptr) return std::make_error_code(std::errc::no_such_device);
  ibv_device* chosen = nullptr;
  for (int i = 0; i < count && chosen == nullptr; ++i)
    if (name.empty() || name == ::ibv_get_device_name(list[i])) chosen = list[i];
  if (chosen == nullptr) {
    ::ibv_free_device_list(list);
    return std::make_error_code(std::errc::no_such_device);
  }
  const std::string chosen_name = ::ibv_get_device_name(chosen);
  ibv_context* context = ::ibv_open_device(chosen);
  ::ibv_free_device_list(list);  // an opened context outlives the list
  if (context == nullptr) return std::error_code(errno != 0 ? errno : ENODEV, std::system_category());
  ibv_pd* pd = ::ibv_alloc_pd(context);
  if (pd == nullptr) {
    const int e = errno != 0 ? errno : ENOMEM;
    ::ibv_close_device(context);
    return std::error_code(e, std::system_category());
  }
  return std::unique_ptr<device>(new device(context, pd, chosen_name));
}

device::~device() {
  // Everything registered on the domain must be gone by now: the pool and queue pairs are
  // owned by objects that hold this device and are destroyed first.
  ::ibv_dealloc_pd(pd_);
  ::ibv_close_device(context_);
}

}  // namespace bellows::verbs
