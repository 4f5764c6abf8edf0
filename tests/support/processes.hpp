#pragma once
// Peers in a child process, for tests that need two real processes. fork() without exec is
// enough: the test binary is single-threaded when it forks and the child builds its own
// io_context. Every child has a deadline; a child that outlives it is killed.

#include <fcntl.h>
#include <poll.h>
#include <sys/wait.h>
#include <unistd.h>
#include <chrono>
#include <csignal>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <ostream>
#include <string>
#include <thread>
#include <utility>
#include <vector>

namespace bellows::test {

/// Descriptors this process has open now.
inline std::size_t open_fd_count() {
  std::size_t n = 0;
  for ([[maybe_unused]] const auto& entry : std::filesystem::directory_iterator("/proc/self/fd")) ++n;
  return n;
}

/// A name no other test (or concurrent ctest job) uses.
inline std::string unique_name(const char* what) {
  static int counter = 0;
  return std::string("test-") + what + "-" + std::to_string(::getpid()) + "-" + std::to_string(++counter);
}

/// Whether this user's processes may read each other's memory (Yama's ptrace scope allows it),
/// so that shm offers are fetched both ways between a test and its child.
inline bool processes_read_each_other() {
  std::ifstream scope_file("/proc/sys/kernel/yama/ptrace_scope");
  int scope = 0;
  if (!(scope_file >> scope)) return true;  // no Yama: the classic same-user rule
  return scope == 0 || (scope < 3 && ::geteuid() == 0);
}

/// The first argument that makes a test binary run a child's body instead of Catch.
inline constexpr const char* child_flag = "--bellows-child";

/// How a child process ended, as its parent sees it: the body's own status, or one of the
/// reasons below that it never got to give one. Compared with an int; printed with its reason.
struct child_exit {
  static constexpr int unknown_role = 95;  ///< the binary has no role of that name
  static constexpr int no_role = 96;       ///< started without naming a role
  static constexpr int exec_failed = 97;   ///< the fresh exec of the test binary failed
  static constexpr int threw = 98;         ///< the body threw
  static constexpr int timed_out = -1000;  ///< still running at the parent's deadline; killed

  int status = 0;

  friend bool operator==(const child_exit& e, int expected) { return e.status == expected; }
  friend std::ostream& operator<<(std::ostream& out, const child_exit& e) {
    out << e.status;
    switch (e.status) {
      case unknown_role: return out << " (the child's role is unknown to the binary)";
      case no_role: return out << " (the child was started without a role)";
      case exec_failed: return out << " (exec of the test binary failed)";
      case threw: return out << " (the child's body threw)";
      case timed_out: return out << " (the child outlived its deadline and was killed)";
      default: return out << (e.status < 0 ? " (ended by a signal)" : "");
    }
  }
};

using child_body = int (*)(const std::vector<std::string>& args);

/// A kind of child process. Each is a namespace-scope object (its name is what travels on the
/// command line of the fresh process), so that starting one names a role that exists.
class child_role {
 public:
  child_role(const char* name, child_body body) : name_(name) { bodies()[name_] = body; }
  const std::string& name() const noexcept { return name_; }

  /// In the child: runs the role named first in `args`, with all of `args`.
  static int run(const std::vector<std::string>& args) {
    if (args.empty()) return child_exit::no_role;
    auto it = bodies().find(args[0]);
    return it == bodies().end() ? child_exit::unknown_role : it->second(args);
  }

 private:
  static std::map<std::string, child_body>& bodies() {
    static std::map<std::string, child_body> registered;
    return registered;
  }
  std::string name_;
};

class child_process {
 public:
  /// Runs this test binary again in a child, as `binary --bellows-child ROLE ARGS...` (the
  /// test main hands them to child_role::run). Unlike a plain fork, the child starts with
  /// nothing of the parent's state, which RDMA libraries need: their device contexts are per
  /// process.
  static child_process exec_self(const child_role& role, std::vector<std::string> args) {
    args.insert(args.begin(), role.name());
    return child_process([args]() -> int {
      const int ready = ready_write_end();
      ::fcntl(ready, F_SETFD, 0);  // survives the exec
      ::setenv("BELLOWS_READY_FD", std::to_string(ready).c_str(), 1);
      std::vector<std::string> all{"/proc/self/exe", child_flag};
      all.insert(all.end(), args.begin(), args.end());
      std::vector<char*> argv;
      for (auto& a : all) argv.push_back(a.data());
      argv.push_back(nullptr);
      ::execv("/proc/self/exe", argv.data());
      return child_exit::exec_failed;
    });
  }

  /// Runs `body` in a child; its return value becomes the exit status.
  explicit child_process(std::function<int()> body) {
    if (::pipe(ready_pipe_) != 0) std::abort();
    pid_ = ::fork();
    if (pid_ == 0) {
      ::close(ready_pipe_[0]);
      ready_write_end() = ready_pipe_[1];
      int status = child_exit::threw;
      try {
        status = body();
      } catch (...) {
        status = child_exit::threw;
      }
      ::_exit(status);
    }
    ::close(ready_pipe_[1]);
  }

  /// Called in the child once it is listening (or otherwise ready for the parent).
  static void signal_ready() {
    const char one = 1;
    [[maybe_unused]] auto n = ::write(ready_write_end(), &one, 1);
  }

  /// Blocks until the child called signal_ready(); false if it died or `limit` passed first.
  bool wait_ready(std::chrono::milliseconds limit = std::chrono::seconds(10)) {
    pollfd p{ready_pipe_[0], POLLIN, 0};
    if (::poll(&p, 1, static_cast<int>(limit.count())) != 1) return false;
    char c = 0;
    return ::read(ready_pipe_[0], &c, 1) == 1;
  }
  child_process(const child_process&) = delete;
  child_process& operator=(const child_process&) = delete;
  child_process(child_process&& other) noexcept
      : ready_pipe_{std::exchange(other.ready_pipe_[0], -1), std::exchange(other.ready_pipe_[1], -1)},
        pid_(std::exchange(other.pid_, -1)),
        reaped_(other.reaped_),
        ended_status_(other.ended_status_) {}
  ~child_process() {
    if (ready_pipe_[0] >= 0) ::close(ready_pipe_[0]);
    if (pid_ > 0 && !reaped_) {
      ::kill(pid_, SIGKILL);
      ::waitpid(pid_, nullptr, 0);
    }
  }

  pid_t pid() const noexcept { return pid_; }
  void kill(int signal = SIGKILL) { ::kill(pid_, signal); }

  enum class state { running, stopped, ended };
  /// Looks without waiting: has the child stopped on a signal, or ended (it is then reaped)?
  state poll_state() {
    if (reaped_) return state::ended;
    int status = 0;
    const pid_t r = ::waitpid(pid_, &status, WNOHANG | WUNTRACED);
    if (r != pid_) return state::running;
    if (WIFSTOPPED(status)) return state::stopped;
    reaped_ = true;
    ended_status_ = WIFEXITED(status) ? WEXITSTATUS(status) : -WTERMSIG(status);
    return state::ended;
  }

  /// The child's exit status, or -signal if a signal ended it, or child_exit::timed_out if it
  /// was still running after `limit` (it is then killed).
  child_exit wait(std::chrono::milliseconds limit = std::chrono::seconds(30)) {
    if (reaped_) return {ended_status_};
    const auto deadline = std::chrono::steady_clock::now() + limit;
    int status = 0;
    for (;;) {
      const pid_t r = ::waitpid(pid_, &status, WNOHANG);
      if (r == pid_) break;
      if (std::chrono::steady_clock::now() > deadline) {
        ::kill(pid_, SIGKILL);
        ::waitpid(pid_, &status, 0);
        reaped_ = true;
        return {child_exit::timed_out};
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    reaped_ = true;
    if (WIFEXITED(status)) return {WEXITSTATUS(status)};
    return {-WTERMSIG(status)};
  }

 private:
  static int& ready_write_end() {
    static int fd = [] {
      const char* inherited = std::getenv("BELLOWS_READY_FD");
      return inherited != nullptr ? std::atoi(inherited) : -1;
    }();
    return fd;
  }

  int ready_pipe_[2] = {-1, -1};
  pid_t pid_ = -1;
  bool reaped_ = false;
  int ended_status_ = 0;
};

}  // namespace bellows::test
