// Catch's main, plus the entry point of child processes that tests start by executing this
// binary again (see child_process::exec_self): a fresh process inherits no RDMA state.

#define CATCH_CONFIG_RUNNER
#include <catch2/catch.hpp>

#include "support/peers.hpp"
#include "support/skips.hpp"

#include <iostream>
#include <string_view>

namespace {

/// Counts the test cases that ran and those that skipped themselves (support/skips.hpp).
struct skip_listener : Catch::TestEventListenerBase {
  using TestEventListenerBase::TestEventListenerBase;
  void testCaseStarting(const Catch::TestCaseInfo&) override { bellows::test::skips().current_case_skipped = false; }
  void testCaseEnded(const Catch::TestCaseStats&) override {
    auto& s = bellows::test::skips();
    ++(s.current_case_skipped ? s.cases_skipped : s.cases_run);
  }
};

}  // namespace

CATCH_REGISTER_LISTENER(skip_listener)

int main(int argc, char** argv) {
  if (argc >= 2 && std::string_view(argv[1]) == bellows::test::child_flag)
    return bellows::test::child_role::run(std::vector<std::string>(argv + 2, argv + argc));
  const int result = Catch::Session().run(argc, argv);
  const auto& s = bellows::test::skips();
  if (s.cases_skipped + s.variants_skipped > 0) {
    std::cout << "skipped: " << s.cases_skipped << " test cases and " << s.variants_skipped
              << " provider variants, because:";
    for (const auto& why : s.reasons) std::cout << "\n  " << why;
    std::cout << std::endl;
  }
  // Nothing ran but skips: say so to ctest rather than pass.
  if (result == 0 && s.cases_run == 0 && s.cases_skipped > 0) return bellows::test::skip_exit_code;
  return result;
}
