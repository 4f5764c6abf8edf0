#include "reactor/idle_watch.hpp"

#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <unistd.h>
#include <algorithm>
#include <cerrno>
#include <system_error>

namespace bellows::detail {
namespace {

std::system_error os_error(const char* what) { return {errno, std::system_category(), what}; }

}  // namespace

idle_watch::idle_watch(std::function<void()> arrival) : arrival_(std::move(arrival)) {}

idle_watch::~idle_watch() { stop(); }

void idle_watch::set(int fd, unsigned events) {
  // One-shot: after reporting, a descriptor stays quiet until the reactor has read it and asks
  // again, so a level-triggered descriptor cannot make the thread spin.
  epoll_event e{};
  e.events = events;
  e.data.fd = fd;
  if (::epoll_ctl(epoll_, EPOLL_CTL_MOD, fd, &e) == 0) return;
  if (errno == ENOENT && ::epoll_ctl(epoll_, EPOLL_CTL_ADD, fd, &e) == 0) return;
  // A descriptor closed since (its link went away) is out of the set already.
  if (errno == EBADF) return;
  throw os_error("bellows idle watch epoll_ctl");
}

void idle_watch::watch(const std::vector<int>& descriptors) {
  if (epoll_ < 0) {
    epoll_ = ::epoll_create1(EPOLL_CLOEXEC);
    if (epoll_ < 0) throw os_error("bellows idle watch epoll");
    stop_fd_ = ::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (stop_fd_ < 0) throw os_error("bellows idle watch eventfd");
    epoll_event e{};
    e.events = EPOLLIN;
    e.data.fd = stop_fd_;
    if (::epoll_ctl(epoll_, EPOLL_CTL_ADD, stop_fd_, &e) != 0) throw os_error("bellows idle watch epoll_ctl");
    thread_ = std::thread([this] { run(); });
  }
  for (int fd : watched_)
    if (std::find(descriptors.begin(), descriptors.end(), fd) == descriptors.end())
      ::epoll_ctl(epoll_, EPOLL_CTL_DEL, fd, nullptr);
  for (int fd : descriptors) set(fd, EPOLLIN | EPOLLONESHOT);
  watched_ = descriptors;
  paused_ = false;
}

void idle_watch::pause() {
  if (paused_) return;
  paused_ = true;
  // Quiets only what is still in the set. Re-adding is wrong here: a descriptor closed since
  // (its link failed) left the set, and its number may name something epoll refuses by now.
  for (int fd : watched_) {
    epoll_event e{};
    e.events = EPOLLONESHOT;
    e.data.fd = fd;
    ::epoll_ctl(epoll_, EPOLL_CTL_MOD, fd, &e);
  }
}

void idle_watch::stop() {
  if (thread_.joinable()) {
    const std::uint64_t one = 1;
    [[maybe_unused]] auto n = ::write(stop_fd_, &one, sizeof one);
    thread_.join();
  }
  if (epoll_ >= 0) ::close(epoll_);
  if (stop_fd_ >= 0) ::close(stop_fd_);
  epoll_ = stop_fd_ = -1;
}

void idle_watch::run() {
  for (;;) {
    epoll_event events[8];
    const int n = ::epoll_wait(epoll_, events, 8, -1);
    if (n < 0) {
      if (errno == EINTR) continue;
      return;  // only a closed epoll descriptor gets here, and stop() closes it after the join
    }
    bool arrived = false;
    for (int i = 0; i < n; ++i) {
      if (events[i].data.fd == stop_fd_) return;
      arrived = true;
    }
    if (arrived) arrival_();
  }
}

}  // namespace bellows::detail
