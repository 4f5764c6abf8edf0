#pragma once
// What the soak prints when a channel hangs: everything its stats say and the last things the
// driver did on it. The echo peers add their side (echo_peer.hpp).

#include <bellows/stats.hpp>

#include <array>
#include <cstdint>
#include <cstdio>
#include <ostream>

namespace bellows::test {

inline void describe_stats(std::ostream& out, const channel_stats& st) {
  out << "send tier " << st.send_tier << ", receive tier " << st.receive_tier << ", sent " << st.messages_sent << " ("
      << st.bytes_sent << " B, " << st.direct_messages_sent << " direct), received " << st.messages_received << " ("
      << st.bytes_received << " B, " << st.direct_messages_received << " direct), enlargements " << st.enlargements
      << ", shrinks " << st.shrinks << ", denials " << st.denials << ", ack timeouts " << st.ack_timeouts
      << ", doorbells " << st.doorbells_rung << " rung / " << st.doorbells_skipped << " skipped, credit stalls "
      << st.credit_stalls << ", registered " << st.registered_bytes << " B";
}

/// The last few operations on one channel, oldest first when printed.
class operation_history {
 public:
  /// `what`: "send", "receive"; `size`: the message's, 0 where none; `outcome`: "ok", "cancelled", ...
  void add(const char* what, std::size_t size, const char* outcome) {
    entries_[next_++ % entries_.size()] = {what, size, outcome};
  }
  void print(std::ostream& out) const {
    const std::size_t n = next_ < entries_.size() ? next_ : entries_.size();
    for (std::size_t i = next_ - n; i < next_; ++i) {
      const auto& e = entries_[i % entries_.size()];
      out << " " << e.what << "(" << e.size << ")=" << e.outcome;
    }
  }

 private:
  struct entry {
    const char* what = "";
    std::size_t size = 0;
    const char* outcome = "";
  };
  std::array<entry, 16> entries_{};
  std::size_t next_ = 0;
};

}  // namespace bellows::test
