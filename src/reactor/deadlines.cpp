// The reactor's one timer for its channels' deadlines (ack timeouts, idle shrinks). A channel
// announces its next deadline after every run; the timer only ever moves earlier, so a deadline
// pushed back by each large message costs a comparison, not a timer update. When the timer fires
// the reactor looks at every channel, polls those that are due and sets the timer for the rest.
// While the reactor is idle (nothing pending) no deadline holds the io_context, as before.
#include "reactor/channel_state.hpp"
#include "reactor/reactor.hpp"

#include <memory>
#include <vector>

namespace bellows::detail {

void reactor::deadline_at(proto::clock_time deadline) {
  if (idle_ || shut_down_) return;
  if (deadline_armed_ && *deadline_armed_ <= deadline) return;
  arm_deadline_timer(deadline);
}

void reactor::arm_deadline_timer(proto::clock_time at) {
  deadline_armed_ = at;
  deadline_timer_.expires_at(
      std::chrono::steady_clock::time_point(std::chrono::duration_cast<std::chrono::steady_clock::duration>(at)));
  deadline_timer_.async_wait([this](std::error_code ec) {
    if (!ec && !shut_down_) expire_deadlines();
  });
}

void reactor::expire_deadlines() {
  deadline_armed_.reset();
  const proto::clock_time now = std::chrono::steady_clock::now().time_since_epoch();
  std::vector<std::shared_ptr<channel_state>> due;
  std::optional<proto::clock_time> next;
  for (auto* ch : channels_) {
    const auto deadline = ch->deadline();
    if (!deadline) continue;
    if (*deadline > now) {
      if (!next || *deadline < *next) next = deadline;
    } else if (auto alive = ch->weak_from_this().lock()) {
      due.push_back(std::move(alive));
    }
  }
  if (next) deadline_at(*next);
  // Each poll announces the channel's next deadline again.
  for (auto& ch : due) ch->poll(now);
}

}  // namespace bellows::detail
