#pragma once
// The executor a type-erased executor holds, if it is of type T. Asio 1.22's
// any_executor::target<T>() casts to T without comparing types (later releases compare), so a
// strand read through target<io_context::executor_type>() looks like the io_context executor
// it wraps; every lookup of a concrete executor in bellows goes through here instead.

#include <asio/any_io_executor.hpp>

#include <typeinfo>

namespace bellows::detail {

template <class T>
const T* executor_target(const asio::any_io_executor& ex) noexcept {
  if (!ex || ex.target_type() != typeid(T)) return nullptr;
  return ex.target<T>();
}

}  // namespace bellows::detail
