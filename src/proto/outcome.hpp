#pragma once
// A value or the error that prevented it; the core's decoders return these instead of throwing.

#include <bellows/error.hpp>

#include <cassert>
#include <optional>
#include <system_error>
#include <utility>

namespace bellows::proto {

template <class T>
class outcome {
 public:
  outcome(T value) : value_(std::move(value)) {}
  outcome(std::error_code ec) : error_(ec) { assert(ec); }
  outcome(bellows::error e) : error_(make_error_code(e)) {}

  explicit operator bool() const noexcept { return value_.has_value(); }
  std::error_code failure() const noexcept { return error_; }
  T& operator*() { return *value_; }
  const T& operator*() const { return *value_; }
  T* operator->() { return &*value_; }
  const T* operator->() const { return &*value_; }

 private:
  std::optional<T> value_;
  std::error_code error_;
};

}  // namespace bellows::proto
