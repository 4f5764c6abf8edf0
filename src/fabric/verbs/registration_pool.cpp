#include "fabric/verbs/registration_pool.hpp"

#include <bellows/error.hpp>

#include <bit>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <system_error>

namespace bellows::verbs {

registration_pool::~registration_pool() {
  for (auto& b : blocks_) destroy(b);
}

unsigned registration_pool::class_of(std::size_t length) noexcept {
  const std::size_t rounded = std::bit_ceil(std::max(length, smallest_class));
  return static_cast<unsigned>(std::countr_zero(rounded) - std::countr_zero(smallest_class));
}

fabric::region registration_pool::region_of(std::uint64_t handle, std::size_t length) const {
  const block& b = blocks_[handle - 1];
  return {handle, b.mr->rkey, reinterpret_cast<std::uint64_t>(b.data), b.data, length};
}

proto::outcome<fabric::region> registration_pool::allocate(std::size_t length) {
  if (length == 0 || length > class_bytes(class_count - 1)) return error::invalid_argument;
  const unsigned c = class_of(length);
  const std::size_t bytes = class_bytes(c);

  if (!free_[c].empty()) {
    const std::uint64_t handle = free_[c].back();
    free_[c].pop_back();
    block& b = blocks_[handle - 1];
    // What the previous channel left there must not reach the next peer.
    std::memset(b.data, 0, bytes);
    b.in_use = true;
    cached_ -= bytes;
    in_use_ += bytes;
    return region_of(handle, length);
  }

  // The budget counts what is registered (pinned), cached or not; cached blocks of other
  // classes go first when it is short.
  if (!budget_->take(bytes)) {
    trim();
    if (!budget_->take(bytes)) return error::budget_exhausted;
  }
  // Page-aligned so that no two registrations share a page.
  auto* data = static_cast<std::byte*>(std::aligned_alloc(4096, std::max<std::size_t>(bytes, 4096)));
  if (data == nullptr) {
    budget_->give_back(bytes);
    return std::make_error_code(std::errc::not_enough_memory);
  }
  std::memset(data, 0, bytes);
  ++registrations_;
  ibv_mr* mr = ::ibv_reg_mr(pd_, data, bytes, IBV_ACCESS_LOCAL_WRITE | IBV_ACCESS_MW_BIND);
  if (mr == nullptr) {
    const int e = errno != 0 ? errno : ENOMEM;
    std::free(data);
    budget_->give_back(bytes);
    return std::error_code(e, std::system_category());
  }
  std::uint64_t handle;
  if (!holes_.empty()) {
    handle = holes_.back();
    holes_.pop_back();
  } else {
    blocks_.emplace_back();
    handle = blocks_.size();
  }
  blocks_[handle - 1] = block{data, mr, c, true};
  in_use_ += bytes;
  return region_of(handle, length);
}

void registration_pool::release(std::uint64_t handle) {
  if (handle == 0 || handle > blocks_.size() || !blocks_[handle - 1].in_use) return;
  block& b = blocks_[handle - 1];
  const std::size_t bytes = class_bytes(b.size_class);
  b.in_use = false;
  in_use_ -= bytes;
  cached_ += bytes;
  free_[b.size_class].push_back(handle);
}

void registration_pool::trim() {
  for (auto& list : free_) {
    for (auto handle : list) {
      destroy(blocks_[handle - 1]);
      holes_.push_back(handle);
    }
    list.clear();
  }
  cached_ = 0;
}

std::uint32_t registration_pool::local_key(std::uint64_t handle) const { return blocks_.at(handle - 1).mr->lkey; }

ibv_mr* registration_pool::memory_region(std::uint64_t handle) const { return blocks_.at(handle - 1).mr; }

void registration_pool::destroy(block& b) noexcept {
  if (b.mr == nullptr) return;
  ::ibv_dereg_mr(b.mr);
  budget_->give_back(class_bytes(b.size_class));
  std::free(b.data);
  b = block{};
}

}  // namespace bellows::verbs
