#pragma once
// Skips that are reported as skips. Catch2 v2 has no SKIP, so a test that cannot run here says
// why with WARN and is counted: test_main prints the counts after the run, and a run in which
// every test case was skipped exits with skip_exit_code, which ctest reports as "Skipped"
// (SKIP_RETURN_CODE in tests/CMakeLists.txt), never as a pass.

#include <catch2/catch.hpp>

#include <set>
#include <string>

namespace bellows::test {

inline constexpr int skip_exit_code = 77;

struct skip_counts {
  int cases_run = 0;
  int cases_skipped = 0;
  int variants_skipped = 0;  ///< provider variants of a case that ran with the others
  bool current_case_skipped = false;
  std::set<std::string> reasons;
};

inline skip_counts& skips() {
  static skip_counts counts;
  return counts;
}

/// The whole test case cannot run here; call it and return.
inline void skip_case(const std::string& why) {
  WARN("skipped: " << why);
  skips().current_case_skipped = true;
  skips().reasons.insert(why);
}

/// One variant of a test case (a provider) cannot run here; the others do.
inline void skip_variant(const std::string& why) {
  WARN("skipped: " << why);
  ++skips().variants_skipped;
  skips().reasons.insert(why);
}

}  // namespace bellows::test
