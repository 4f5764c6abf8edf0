// rdma_cm connection setup driven by the io_context, on a real device: the Soft-RoCE guest of
// tests/rxe (its rxe0 sits on 192.0.2.1). On a host without RDMA each test says so and passes.

#include "fabric/verbs/cm_channel.hpp"
#include "fabric/verbs/device.hpp"
#include "support/rdma.hpp"
#include "support/run_until.hpp"

#include <bellows/error.hpp>

#include <asio/io_context.hpp>

#include <catch2/catch.hpp>

#include <arpa/inet.h>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <string>

using namespace std::chrono_literals;
using bellows::test::run_until;
using namespace bellows::test;
using bellows::verbs::cm_channel;
using bellows::verbs::cm_event;

namespace {

std::string text_of(const cm_event& e) {
  // Private data arrives padded with zeros to the transport's length.
  std::string s(reinterpret_cast<const char*>(e.private_data.data()), e.private_data.size());
  return s.substr(0, s.find('\0'));
}

}  // namespace

TEST_CASE("verbs: rdma_cm connects through the io_context, carries private data, reports disconnects", "[verbs]") {
  if (!rdma_here()) return skip_case("no RDMA device here; tests/rxe runs this on Soft-RoCE");
  asio::io_context io;
  auto cm = cm_channel::create(io.get_executor());
  REQUIRE(cm);
  auto& channel = **cm;

  connection listener, server, client;  // destroyed before the channel and the io_context
  const std::uint16_t port = listen_on(channel, listener);

  std::string server_heard, client_heard;
  bool server_established = false, client_established = false;
  std::error_code server_end, client_end;
  const std::string client_hello = "bellows-open ring=4096", server_hello = "bellows-accept ring=4096";

  channel.watch(listener.id, [&](const cm_event& e) {
    REQUIRE(e.type == RDMA_CM_EVENT_CONNECT_REQUEST);
    server_heard = text_of(e);
    REQUIRE(server.create_queue_pair(e.id));
    channel.watch(e.id, [&](const cm_event& later) {
      if (later.type == RDMA_CM_EVENT_ESTABLISHED) server_established = true;
      if (later.type != RDMA_CM_EVENT_DISCONNECTED) return;
      server_end = bellows::verbs::to_error(later);
      // Answering the peer's disconnect request lets its side finish at once, not after the
      // CM's retries time out.
      ::rdma_disconnect(later.id);
    });
    auto answer = with_private_data(server_hello);
    REQUIRE(::rdma_accept(e.id, &answer) == 0);
  });

  connect_to(
      channel, client, port, client_hello, [&](rdma_cm_id* id) { return client.create_queue_pair(id); },
      [&](const cm_event& e) {
        if (e.type == RDMA_CM_EVENT_ESTABLISHED) {
          client_established = true;
          client_heard = text_of(e);
          ::rdma_disconnect(e.id);
        } else if (e.type == RDMA_CM_EVENT_DISCONNECTED) {
          client_end = bellows::verbs::to_error(e);
        } else {
          FAIL("unexpected rdma_cm event " << ::rdma_event_str(e.type));
        }
      });

  const bool ended = run_until(
      io, [&] { return server_end && client_end; }, 5s);
  CAPTURE(server_established, client_established, server_end.message(), client_end.message(), server_heard);
  REQUIRE(ended);
  CHECK(server_established);
  CHECK(client_established);
  CHECK(server_heard == client_hello);
  CHECK(client_heard == server_hello);
  CHECK(server_end == bellows::error::connection_reset);
  for (auto* id : {listener.id, server.id, client.id}) channel.forget(id);
}

TEST_CASE("verbs: connecting where nobody listens is refused, through the io_context", "[verbs]") {
  if (!rdma_here()) return skip_case("no RDMA device here; tests/rxe runs this on Soft-RoCE");
  asio::io_context io;
  auto cm = cm_channel::create(io.get_executor());
  REQUIRE(cm);
  auto& channel = **cm;
  connection client;
  std::error_code outcome;
  // Port 1: no test listens there.
  connect_to(
      channel, client, 1, "bellows-open", [&](rdma_cm_id* id) { return client.create_queue_pair(id); },
      [&](const cm_event& e) {
        outcome = bellows::verbs::to_error(e);
        if (!outcome) outcome = std::make_error_code(std::errc::protocol_error);  // connected to nobody?
      });
  REQUIRE(run_until(
      io, [&] { return static_cast<bool>(outcome); }, 5s));
  CHECK(outcome == std::errc::connection_refused);
  channel.forget(client.id);
}
