// rdma_cm connection setup driven by the io_context, on a real device: the Soft-RoCE guest of
// tests/rxe (its rxe0 sits on 192.0.2.1). On a host without RDMA each test says so and passes.

#include "fabric/verbs/cm_channel.hpp"
#include "fabric/verbs/device.hpp"
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
using bellows::verbs::cm_channel;
using bellows::verbs::cm_event;

namespace {

bool rdma_here() {
  if (bellows::verbs::device::open()) return true;
  if (std::getenv("BELLOWS_IN_RXE_GUEST") != nullptr) FAIL("no RDMA device in the rxe guest");
  WARN("no RDMA device: verbs test skipped; tests/rxe runs it on Soft-RoCE");
  return false;
}

sockaddr_in guest_address(std::uint16_t port) {
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(port);
  const char* text = std::getenv("BELLOWS_RDMA_ADDRESS");
  ::inet_pton(AF_INET, text != nullptr ? text : "192.0.2.1", &a.sin_addr);
  return a;
}

/// An id and the verbs objects a connected id needs, destroyed in the order verbs requires:
/// queue pair, completion queue, protection domain, then the id.
struct connection {
  rdma_cm_id* id = nullptr;
  ibv_pd* pd = nullptr;
  ibv_cq* cq = nullptr;

  connection() = default;
  connection(const connection&) = delete;
  connection& operator=(const connection&) = delete;

  bool create_queue_pair(rdma_cm_id* on) {
    id = on;
    pd = ::ibv_alloc_pd(on->verbs);
    cq = pd != nullptr ? ::ibv_create_cq(on->verbs, 8, nullptr, nullptr, 0) : nullptr;
    if (cq == nullptr) return false;
    ibv_qp_init_attr attr{};
    attr.send_cq = attr.recv_cq = cq;
    attr.cap.max_send_wr = attr.cap.max_recv_wr = 4;
    attr.cap.max_send_sge = attr.cap.max_recv_sge = 1;
    attr.qp_type = IBV_QPT_RC;
    return ::rdma_create_qp(on, pd, &attr) == 0;
  }
  ~connection() {
    if (id != nullptr && id->qp != nullptr) ::rdma_destroy_qp(id);
    if (cq != nullptr) ::ibv_destroy_cq(cq);
    if (pd != nullptr) ::ibv_dealloc_pd(pd);
    if (id != nullptr) ::rdma_destroy_id(id);
  }
};

rdma_conn_param with_private_data(const std::string& text) {
  rdma_conn_param p{};
  p.private_data = text.data();
  p.private_data_len = static_cast<std::uint8_t>(text.size());
  p.retry_count = 7;
  p.rnr_retry_count = 7;
  return p;
}

std::string text_of(const cm_event& e) {
  // Private data arrives padded with zeros to the transport's length.
  std::string s(reinterpret_cast<const char*>(e.private_data.data()), e.private_data.size());
  return s.substr(0, s.find('\0'));
}

}  // namespace

TEST_CASE("verbs: rdma_cm connects through the io_context, carries private data, reports disconnects", "[verbs]") {
  if (!rdma_here()) return;
  asio::io_context io;
  auto cm = cm_channel::create(io);
  REQUIRE(cm);
  auto& channel = **cm;

  connection listener, server, client;  // destroyed before the channel and the io_context
  auto listen_id = channel.create_id();
  REQUIRE(listen_id);
  listener.id = *listen_id;
  auto bind_to = guest_address(0);
  REQUIRE(::rdma_bind_addr(listener.id, reinterpret_cast<sockaddr*>(&bind_to)) == 0);
  REQUIRE(::rdma_listen(listener.id, 8) == 0);
  const std::uint16_t port = ntohs(::rdma_get_src_port(listener.id));

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

  auto client_id = channel.create_id();
  REQUIRE(client_id);
  client.id = *client_id;
  channel.watch(client.id, [&](const cm_event& e) {
    switch (e.type) {
      case RDMA_CM_EVENT_ADDR_RESOLVED: REQUIRE(::rdma_resolve_route(e.id, 2000) == 0); break;
      case RDMA_CM_EVENT_ROUTE_RESOLVED: {
        REQUIRE(client.create_queue_pair(e.id));
        auto request = with_private_data(client_hello);
        REQUIRE(::rdma_connect(e.id, &request) == 0);
        break;
      }
      case RDMA_CM_EVENT_ESTABLISHED:
        client_established = true;
        client_heard = text_of(e);
        ::rdma_disconnect(e.id);
        break;
      case RDMA_CM_EVENT_DISCONNECTED: client_end = bellows::verbs::to_error(e); break;
      default: FAIL("unexpected rdma_cm event " << ::rdma_event_str(e.type));
    }
  });
  auto to = guest_address(port);
  REQUIRE(::rdma_resolve_addr(client.id, nullptr, reinterpret_cast<sockaddr*>(&to), 2000) == 0);

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
  if (!rdma_here()) return;
  asio::io_context io;
  auto cm = cm_channel::create(io);
  REQUIRE(cm);
  auto& channel = **cm;
  connection client;
  auto id = channel.create_id();
  REQUIRE(id);
  client.id = *id;
  std::error_code outcome;
  channel.watch(client.id, [&](const cm_event& e) {
    if (e.type == RDMA_CM_EVENT_ADDR_RESOLVED) {
      REQUIRE(::rdma_resolve_route(e.id, 2000) == 0);
    } else if (e.type == RDMA_CM_EVENT_ROUTE_RESOLVED) {
      REQUIRE(client.create_queue_pair(e.id));
      auto request = with_private_data("bellows-open");
      REQUIRE(::rdma_connect(e.id, &request) == 0);
    } else {
      outcome = bellows::verbs::to_error(e);
      if (!outcome) outcome = std::make_error_code(std::errc::protocol_error);  // connected to nobody?
    }
  });
  auto to = guest_address(1);  // a port no test listens on
  REQUIRE(::rdma_resolve_addr(client.id, nullptr, reinterpret_cast<sockaddr*>(&to), 2000) == 0);
  REQUIRE(run_until(
      io, [&] { return static_cast<bool>(outcome); }, 5s));
  CHECK(outcome == std::errc::connection_refused);
  channel.forget(client.id);
}
