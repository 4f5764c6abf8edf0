#include "fabric/shm/arena.hpp"

#include <bellows/error.hpp>

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>
#include <bit>
#include <cerrno>
#include <cstring>
#include <utility>

namespace bellows::shm {
namespace {

constexpr int required_seals = F_SEAL_SHRINK;

std::error_code last_error() { return {errno, std::system_category()}; }

proto::outcome<std::byte*> map_shared(int fd, std::size_t size) {
  void* p = ::mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_NORESERVE, fd, 0);
  if (p == MAP_FAILED) return last_error();
  return static_cast<std::byte*>(p);
}

}  // namespace

mapping::mapping(mapping&& other) noexcept
    : fd_(std::exchange(other.fd_, -1)),
      base_(std::exchange(other.base_, nullptr)),
      size_(std::exchange(other.size_, 0)) {}

mapping& mapping::operator=(mapping&& other) noexcept {
  if (this != &other) {
    this->~mapping();
    fd_ = std::exchange(other.fd_, -1);
    base_ = std::exchange(other.base_, nullptr);
    size_ = std::exchange(other.size_, 0);
  }
  return *this;
}

mapping::~mapping() {
  if (base_ != nullptr) ::munmap(base_, size_);
  if (fd_ >= 0) ::close(fd_);
}

proto::outcome<mapping> mapping::adopt(int fd, std::size_t size) {
  mapping owned(fd, nullptr, 0);
  const int seals = ::fcntl(fd, F_GET_SEALS);
  if (seals < 0 || (seals & required_seals) != required_seals) return make_error_code(error::protocol_violation);
  struct stat st {};
  if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode) || static_cast<std::uint64_t>(st.st_size) < size)
    return make_error_code(error::protocol_violation);
  auto base = map_shared(fd, size);
  if (!base) return base.failure();
  owned.base_ = *base;
  owned.size_ = size;
  return owned;
}

proto::outcome<arena> arena::create(std::size_t size, memory_budget& budget) {
  if (size <= header_bytes || size % page_bytes != 0) return make_error_code(error::invalid_argument);
  const int fd = ::memfd_create("bellows-arena", MFD_CLOEXEC | MFD_ALLOW_SEALING);
  if (fd < 0) return last_error();
  mapping unmapped(fd, nullptr, 0);  // closes fd on the error paths
  // Sparse: pages exist only once written. The seals stop the peer from truncating the file,
  // which would turn our later stores into SIGBUS.
  if (::ftruncate(fd, static_cast<off_t>(size)) != 0) return last_error();
  if (::fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL) != 0) return last_error();
  auto base = map_shared(fd, size);
  if (!base) return base.failure();
  mapping memory(fd, *base, size);
  (void)unmapped.release();
  return arena(std::move(memory), budget);
}

arena::arena(arena&& other) noexcept
    : memory_(std::move(other.memory_)),
      budget_(std::exchange(other.budget_, nullptr)),
      next_(other.next_),
      registered_(std::exchange(other.registered_, 0)),
      free_(std::move(other.free_)),
      warm_(std::move(other.warm_)),
      warm_bytes_(std::exchange(other.warm_bytes_, 0)) {}

arena::~arena() {
  if (budget_ == nullptr) return;
  budget_->give_back(registered_);
  budget_->warm -= warm_bytes_;
}

proto::outcome<fabric::region> arena::allocate(std::size_t length) {
  const auto size_class =
      std::max(min_class, static_cast<unsigned>(std::bit_width(std::max<std::size_t>(length, 1) - 1)));
  if (size_class >= class_count) return make_error_code(error::invalid_argument);
  const std::size_t bytes = std::size_t{1} << size_class;
  if (budget_ == nullptr) return make_error_code(error::channel_closed);  // the reactor is shutting down
  if (budget_->used + bytes > budget_->limit || budget_->used + bytes < budget_->used)
    return make_error_code(error::budget_exhausted);
  std::size_t offset;
  auto& free_list = free_[size_class];
  auto& warm_list = warm_[size_class];
  // New memory must fit beside what is kept warm; warm memory goes first when it does not.
  if (warm_list.empty() && budget_->used + budget_->warm + bytes > budget_->limit) trim();
  if (!warm_list.empty()) {
    offset = warm_list.back();
    warm_list.pop_back();
    warm_bytes_ -= bytes;
    budget_->warm -= bytes;
  } else if (!free_list.empty()) {
    offset = free_list.back();
    free_list.pop_back();
  } else {
    // Aligned to the class up to a page, so small blocks never straddle a page and every
    // block of a page or more can be punched out exactly.
    const std::size_t align = std::min(bytes, page_bytes);
    offset = (next_ + align - 1) & ~(align - 1);
    if (offset + bytes > memory_.size()) return make_error_code(error::budget_exhausted);
    next_ = offset + bytes;
  }
  budget_->used += bytes;
  registered_ += bytes;
  return fabric::region{offset | size_class, 0, offset, memory_.base() + offset, bytes};
}

void arena::release(std::uint64_t handle) {
  const unsigned size_class = static_cast<unsigned>(handle & 63);
  const std::size_t offset = handle & ~std::uint64_t{63};
  const std::size_t bytes = std::size_t{1} << size_class;
  registered_ -= bytes;
  if (budget_ != nullptr) budget_->give_back(bytes);
  const bool keep_warm = bytes >= page_bytes && budget_ != nullptr && budget_->warm + bytes <= budget_->warm_limit &&
                         budget_->used + budget_->warm + bytes <= budget_->limit;
  if (bytes < page_bytes || keep_warm || !punch(offset, bytes)) {
    // The next owner must see zeros. Zeroing here, when a ring is let go (a shrink, a close,
    // the small ring left behind by an enlargement), keeps it off the next enlargement's path.
    std::memset(memory_.base() + offset, 0, bytes);
  }
  if (keep_warm) {
    warm_[size_class].push_back(offset);
    warm_bytes_ += bytes;
    budget_->warm += bytes;
  } else {
    free_[size_class].push_back(offset);
  }
}

bool arena::punch(std::size_t offset, std::size_t bytes) {
  // Punched pages read back as zeros, which is also what the next owner must see.
  return ::fallocate(memory_.fd(), FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, static_cast<off_t>(offset),
                     static_cast<off_t>(bytes)) == 0;
}

void arena::trim() {
  for (unsigned size_class = 0; size_class < class_count; ++size_class) {
    const std::size_t bytes = std::size_t{1} << size_class;
    for (const std::size_t offset : warm_[size_class]) {
      // Zeroed already; if the punch fails the pages simply stay.
      punch(offset, bytes);
      free_[size_class].push_back(offset);
      warm_bytes_ -= bytes;
      if (budget_ != nullptr) budget_->warm -= bytes;
    }
    warm_[size_class].clear();
  }
}

}  // namespace bellows::shm
