#pragma once
// Making the kernel refuse process_vm_readv between a test and its child, as it does between
// any two processes under Yama's ptrace scope 1 (the default of several distributions), even
// when the tests run as root. The kernel lets a reader in if the target is dumpable and runs
// as the same user, or if the reader holds CAP_SYS_PTRACE: while a memory_reads_refused lives,
// this process is not dumpable and its constructing thread holds no CAP_SYS_PTRACE, so two
// processes that both hold one cannot read each other. Capabilities belong to a thread: make
// it on the thread that runs the io_context, and let it go there.

#include <linux/capability.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cstdint>

namespace bellows::test {

class memory_reads_refused {
 public:
  memory_reads_refused() : dumpable_before_(::prctl(PR_GET_DUMPABLE)) {
    ::prctl(PR_SET_DUMPABLE, 0);
    had_ptrace_ = set_ptrace_capability(false);
  }
  ~memory_reads_refused() {
    if (had_ptrace_) set_ptrace_capability(true);
    ::prctl(PR_SET_DUMPABLE, dumpable_before_ > 0 ? dumpable_before_ : 1);
  }
  memory_reads_refused(const memory_reads_refused&) = delete;
  memory_reads_refused& operator=(const memory_reads_refused&) = delete;

 private:
  /// Turns CAP_SYS_PTRACE on or off in this thread's effective set (it stays permitted, so it
  /// can come back); returns whether it was on.
  static bool set_ptrace_capability(bool on) {
    __user_cap_header_struct header{_LINUX_CAPABILITY_VERSION_3, 0};
    __user_cap_data_struct data[_LINUX_CAPABILITY_U32S_3]{};
    if (::syscall(SYS_capget, &header, data) != 0) return false;
    auto& word = data[CAP_TO_INDEX(CAP_SYS_PTRACE)];
    const std::uint32_t bit = CAP_TO_MASK(CAP_SYS_PTRACE);
    const bool was_on = (word.effective & bit) != 0;
    if (on && (word.permitted & bit) != 0) word.effective |= bit;
    if (!on) word.effective &= ~bit;
    ::syscall(SYS_capset, &header, data);
    return was_on;
  }

  int dumpable_before_;
  bool had_ptrace_ = false;
};

}  // namespace bellows::test
