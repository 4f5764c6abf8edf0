#pragma once
// A fuzzer's input read as a script: fixed-size little-endian values taken from the front,
// zeros once it runs out, so every input is a valid script.

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <type_traits>

namespace bellows::fuzz {

class script {
 public:
  script(const std::uint8_t* data, std::size_t size) : data_(data), size_(size) {}

  bool empty() const noexcept { return at_ >= size_; }

  template <class T>
  T take() noexcept {
    static_assert(std::is_trivially_copyable_v<T>);
    T value{};
    const std::size_t n = at_ < size_ ? std::min(sizeof(T), size_ - at_) : 0;
    if (n != 0) std::memcpy(&value, data_ + at_, n);
    at_ += sizeof(T);
    return value;
  }

  /// The rest of the input.
  const std::uint8_t* rest(std::size_t& length) const noexcept {
    length = at_ < size_ ? size_ - at_ : 0;
    return data_ + (at_ < size_ ? at_ : size_);
  }

 private:
  const std::uint8_t* data_;
  std::size_t size_;
  std::size_t at_ = 0;
};

/// The body of a harness's LLVMFuzzerTestOneInput: a fresh `Harness` plays the whole input.
template <class Harness>
int play(const std::uint8_t* data, std::size_t size) {
  script in(data, size);
  Harness h;
  h.run(in);
  return 0;
}

}  // namespace bellows::fuzz
