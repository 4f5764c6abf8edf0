#include "fabric/tcp/regions.hpp"

#include <bellows/error.hpp>

#include <algorithm>
#include <cstdlib>

namespace bellows::tcp {
namespace {

std::uint64_t page_offset(const std::byte* p) { return reinterpret_cast<std::uintptr_t>(p) & 4095; }
constexpr std::uintptr_t ring_alignment = 64;

}  // namespace

regions::~regions() {
  for (auto& b : blocks_) std::free(b.allocated);
  leave_budget();
}

proto::outcome<fabric::region> regions::allocate(std::size_t length) {
  if (length == 0 || length > max_length) return error::invalid_argument;
  if (budget_ != nullptr && !budget_->take(length)) return error::budget_exhausted;
  // Rings start on a cache line, as the protocol requires of their addresses (which carry the
  // memory's offset within a page); calloc leaves large blocks untouched until written.
  void* allocated = std::calloc(1, length + ring_alignment - 1);
  if (allocated == nullptr) {
    if (budget_ != nullptr) budget_->give_back(length);
    return error::budget_exhausted;
  }
  std::uint64_t handle;
  if (!free_handles_.empty()) {
    handle = free_handles_.back();
    free_handles_.pop_back();
  } else {
    blocks_.emplace_back();
    handle = blocks_.size();
  }
  auto* data =
      static_cast<std::byte*>(allocated) + (-reinterpret_cast<std::uintptr_t>(allocated) & (ring_alignment - 1));
  blocks_[handle - 1] = {data, length, allocated};
  registered_ += length;
  return fabric::region{handle, key_, (handle << address_shift) + page_offset(data), data, length};
}

proto::outcome<fabric::region> regions::lend(std::span<std::byte> memory) {
  if (memory.empty() || memory.size() > max_length) return error::invalid_argument;
  std::uint64_t handle;
  do {  // skips the few loans still live or remembered
    handle = next_lent_handle_;
    next_lent_handle_ = next_lent_handle_ + 1 == lent_handle_end ? first_lent_handle : next_lent_handle_ + 1;
  } while (loans_.contains(handle));
  loans_[handle] = {memory.data(), memory.size()};
  return fabric::region{handle, key_, (handle << address_shift) + page_offset(memory.data()), memory.data(),
                        memory.size()};
}

const regions::block* regions::loan_of(std::uint64_t handle) const {
  const auto it = loans_.find(handle);
  return it != loans_.end() ? &it->second : nullptr;
}

std::span<std::byte> regions::lent_memory(std::uint64_t handle) const {
  const block* l = loan_of(handle);
  return l != nullptr ? std::span<std::byte>(l->data, l->length) : std::span<std::byte>();
}

bool regions::taken_back(std::uint64_t key, std::uint64_t address) const {
  const block* l = key == key_ ? loan_of(address >> address_shift) : nullptr;
  return l != nullptr && l->data == nullptr;
}

void regions::release(std::uint64_t handle) {
  if (handle >= first_lent_handle) {
    const auto it = loans_.find(handle);
    if (it == loans_.end() || it->second.data == nullptr) return;
    it->second = {};
    taken_back_.push_back(handle);
    if (taken_back_.size() > remembered_loans) {
      loans_.erase(taken_back_.front());
      taken_back_.pop_front();
    }
    return;
  }
  if (handle == 0 || handle > blocks_.size() || blocks_[handle - 1].data == nullptr) return;
  block& b = blocks_[handle - 1];
  std::free(b.allocated);
  registered_ -= b.length;
  if (budget_ != nullptr) budget_->give_back(b.length);
  b = {};
  free_handles_.push_back(handle);
}

std::byte* regions::find(std::uint64_t key, std::uint64_t address, std::uint64_t length) const {
  const std::uint64_t handle = address >> address_shift;
  if (key != key_ || handle == 0) return nullptr;
  const block* lent = handle >= first_lent_handle ? loan_of(handle) : nullptr;
  if (lent == nullptr && handle > blocks_.size()) return nullptr;
  const block& b = lent != nullptr ? *lent : blocks_[handle - 1];
  if (b.data == nullptr) return nullptr;
  const std::uint64_t within = address & ((std::uint64_t{1} << address_shift) - 1);
  if (within < page_offset(b.data)) return nullptr;
  const std::uint64_t offset = within - page_offset(b.data);
  if (offset > b.length || length > b.length - offset) return nullptr;
  return b.data + offset;
}

void regions::leave_budget() noexcept {
  if (budget_ != nullptr) budget_->give_back(registered_);
  budget_ = nullptr;
}

}  // namespace bellows::tcp
