#pragma once
// Keeps a reactor reachable while it holds no work. With nothing pending the reactor lets go of
// the io_context, so that run() returns as it does with Asio sockets; yet a peer may still ask
// to enlarge, shrink, return credit or close, and must be answered (DESIGN: "a slow reader never
// delays a handshake"). A pending asio wait would count as work, so a small thread sleeps on the
// wake descriptors instead and, when one becomes readable, posts one pass to the io_context: a
// process that runs its io_context for any reason (a work guard, a timer, another socket) answers
// its peers, and one that does not loses nothing, since the pass waits in the queue.

#include <functional>
#include <thread>
#include <vector>

namespace bellows::detail {

class idle_watch {
 public:
  /// `arrival` runs on the watch thread, at most once per watch(): it should post, nothing more.
  explicit idle_watch(std::function<void()> arrival);
  ~idle_watch();
  idle_watch(const idle_watch&) = delete;
  idle_watch& operator=(const idle_watch&) = delete;

  /// Calls `arrival` once when any of `descriptors` is readable (level: one readable now counts).
  /// Replaces the previous set; the thread starts on first use.
  void watch(const std::vector<int>& descriptors);
  /// Stops reporting until the next watch(); the reactor holds work again and polls itself.
  void pause();
  /// Joins the thread; `arrival` is never called after this returns.
  void stop();

 private:
  void run();
  void set(int fd, unsigned events);

  std::function<void()> arrival_;
  int epoll_ = -1;
  int stop_fd_ = -1;
  std::vector<int> watched_;
  bool paused_ = true;
  std::thread thread_;
};

}  // namespace bellows::detail
