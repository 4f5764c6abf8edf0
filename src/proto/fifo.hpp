#pragma once
// A first-in first-out queue on a ring of slots that grows by doubling and is then reused:
// unlike std::deque, which takes a new block from the heap every few elements as its front
// moves, a queue in steady state allocates nothing. For the per-frame queues of the receive path.

#include <cstddef>
#include <iterator>
#include <memory>
#include <type_traits>
#include <utility>
#include <vector>

namespace bellows::proto {

template <class T>
class fifo {
 public:
  bool empty() const noexcept { return size_ == 0; }
  std::size_t size() const noexcept { return size_; }
  T& front() noexcept { return slots_[head_]; }
  const T& front() const noexcept { return slots_[head_]; }
  T& operator[](std::size_t i) noexcept { return slots_[(head_ + i) & (slots_.size() - 1)]; }
  const T& operator[](std::size_t i) const noexcept { return slots_[(head_ + i) & (slots_.size() - 1)]; }

  /// References to elements stay valid until the queue grows (unlike std::deque's).
  T& push_back(T value) {
    if (size_ == slots_.size()) grow();
    T& slot = slots_[(head_ + size_) & (slots_.size() - 1)];
    slot = std::move(value);
    ++size_;
    return slot;
  }
  T& emplace_back(T value) { return push_back(std::move(value)); }
  void pop_front() noexcept {
    // Destroyed and made afresh rather than assigned an empty one: half the stores.
    std::destroy_at(&slots_[head_]);
    std::construct_at(&slots_[head_]);
    head_ = (head_ + 1) & (slots_.size() - 1);
    --size_;
  }
  void clear() noexcept {
    while (!empty()) pop_front();
  }

  template <bool Const>
  class basic_iterator {
    using queue = std::conditional_t<Const, const fifo, fifo>;

   public:
    using iterator_category = std::forward_iterator_tag;
    using value_type = T;
    using difference_type = std::ptrdiff_t;
    using pointer = std::conditional_t<Const, const T*, T*>;
    using reference = std::conditional_t<Const, const T&, T&>;
    basic_iterator() = default;
    basic_iterator(queue* q, std::size_t i) : q_(q), i_(i) {}
    reference operator*() const { return (*q_)[i_]; }
    pointer operator->() const { return &(*q_)[i_]; }
    basic_iterator& operator++() {
      ++i_;
      return *this;
    }
    basic_iterator operator++(int) {
      auto was = *this;
      ++i_;
      return was;
    }
    friend bool operator==(const basic_iterator& a, const basic_iterator& b) { return a.i_ == b.i_; }
    std::size_t index() const noexcept { return i_; }

   private:
    queue* q_ = nullptr;
    std::size_t i_ = 0;
  };
  using iterator = basic_iterator<false>;
  using const_iterator = basic_iterator<true>;
  iterator begin() { return {this, 0}; }
  iterator end() { return {this, size_}; }
  const_iterator begin() const { return {this, 0}; }
  const_iterator end() const { return {this, size_}; }

  /// Removes the element at `at`, moving those behind it forward: for the rare cancellation in
  /// the middle of a queue that holds a handful.
  void erase(iterator at) {
    for (std::size_t i = at.index(); i + 1 < size_; ++i) (*this)[i] = std::move((*this)[i + 1]);
    (*this)[size_ - 1] = T{};
    --size_;
  }

 private:
  void grow() {
    std::vector<T> larger(slots_.empty() ? 4 : slots_.size() * 2);
    for (std::size_t i = 0; i < size_; ++i) larger[i] = std::move((*this)[i]);
    slots_ = std::move(larger);
    head_ = 0;
  }

  std::vector<T> slots_;  // a power of two long
  std::size_t head_ = 0;
  std::size_t size_ = 0;
};

}  // namespace bellows::proto
