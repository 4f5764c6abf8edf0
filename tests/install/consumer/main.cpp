#include <bellows/bellows.hpp>

#include <asio/io_context.hpp>

#include <cstdio>
#include <cstring>

int main() {
  asio::io_context io;  // Asio comes along with bellows::bellows
  const std::error_code ec = bellows::error::enlarge_timeout;
  std::printf("bellows %s: %s\n", BELLOWS_VERSION_STRING, ec.message().c_str());
  return std::strcmp(ec.category().name(), "bellows") == 0 && bellows::default_tiers().size() == 3 ? 0 : 1;
}
