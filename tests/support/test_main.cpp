// Catch's main, plus the entry point of child processes that tests start by executing this
// binary again (see child_process::exec_self): a fresh process inherits no RDMA state.

#define CATCH_CONFIG_RUNNER
#include <catch2/catch.hpp>

#include "support/peers.hpp"

#include <string_view>

int main(int argc, char** argv) {
  if (argc >= 2 && std::string_view(argv[1]) == bellows::test::child_flag)
    return bellows::test::run_child(std::vector<std::string>(argv + 2, argv + argc));
  return Catch::Session().run(argc, argv);
}
