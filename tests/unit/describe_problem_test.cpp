// Malformed URIs and options: each is refused with invalid_argument, and describe_problem names
// the part at fault, as does the acceptor's exception.
#include <bellows/bellows.hpp>

#include <asio/io_context.hpp>

#include <catch2/catch.hpp>

#include <optional>
#include <string>

namespace {

bellows::channel_options with_tiers(std::vector<bellows::tier> tiers) {
  bellows::channel_options o;
  o.tiers = std::move(tiers);
  return o;
}

struct bad_input {
  std::string uri;
  bellows::channel_options options;
  std::string problem;
};

}  // namespace

TEST_CASE("describe_problem names what is wrong with a URI or the tiers, connect and accept refuse it",
          "[unit][asio]") {
  const std::string long_name(96, 'n');
  const auto [uri, options, problem] = GENERATE_COPY(values<bad_input>({
      {"shm-no-scheme", {}, "URI 'shm-no-scheme' has no scheme (shm://NAME, tcp://HOST:PORT or rdma://HOST:PORT)"},
      {"udp://host:1", {}, "unknown scheme 'udp' (this build knows shm, tcp and rdma)"},
      {"shm://", {}, "shm name is empty"},
      {"shm://" + long_name, {}, "shm name longer than 95 bytes"},
      {"rdma://192.0.2.1", {}, "rdma address '192.0.2.1' has no port (rdma://HOST:PORT)"},
      {"rdma://:7472", {}, "rdma address ':7472' has no host"},
      {"rdma://192.0.2.1:99999", {}, "rdma port 99999 out of range"},
      {"rdma://192.0.2.1:port", {}, "rdma port 'port' is not a number"},
      {"rdma://fe80::1:7472", {}, "rdma host 'fe80::1' is an IPv6 address without brackets ([ADDRESS]:PORT)"},
      {"tcp://127.0.0.1", {}, "tcp address '127.0.0.1' has no port (tcp://HOST:PORT)"},
      {"tcp://127.0.0.1:70000", {}, "tcp port 70000 out of range"},
      {"tcp://[::1:7472", {}, "tcp host '[::1' has an unclosed bracket"},
      {"shm://tiers", with_tiers({}), "no tiers"},
      {"shm://tiers", with_tiers({{64, 64}, {64, 1024}, {100, 1024}}), "tier 2 slot_size 100 is not a power of two"},
      {"shm://tiers", with_tiers({{64, 1024}, {64, 64}}),
       "tier 1 holds no larger messages than tier 0 (tiers must grow)"},
      {"shm://tiers", with_tiers({{32, 64}}), "tier 0 slot_size 32 is below 64"},
      {"shm://tiers", with_tiers({{64, 3}}), "tier 0 slot_count 3 is not a power of two"},
  }));
  INFO(uri);
  CHECK(bellows::describe_problem(uri, options) == problem);

  asio::io_context io;
  try {
    bellows::acceptor acc(io.get_executor(), uri, options);
    FAIL("the acceptor took " << uri);
  } catch (const std::system_error& e) {
    CHECK(e.code() == bellows::error::invalid_argument);
    CHECK(std::string(e.what()).find(problem) != std::string::npos);
  }
  std::optional<std::error_code> connected;
  bellows::async_connect(io.get_executor(), uri, options,
                         [&](std::error_code ec, bellows::channel) { connected = ec; });
  io.run_for(std::chrono::seconds(5));
  REQUIRE(connected.has_value());
  CHECK(*connected == bellows::error::invalid_argument);
}

TEST_CASE("describe_problem has nothing to say about a well-formed URI", "[unit][asio]") {
  CHECK(bellows::describe_problem("shm://fine").empty());
  CHECK(bellows::describe_problem("rdma://192.0.2.1:7472").empty());
  CHECK(bellows::describe_problem("rdma://[2001:db8::1]:7472").empty());
  CHECK(bellows::describe_problem("rdma://0.0.0.0:0").empty());  // listening on any port
}
