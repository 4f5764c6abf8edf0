#pragma once
// Helpers for tests on a real RDMA device (the Soft-RoCE guest of tests/rxe, whose rxe0 sits on
// 192.0.2.1): skipping where there is none, addresses, and connected ids with queue pairs.

#include "fabric/verbs/cm_channel.hpp"
#include "fabric/verbs/device.hpp"
#include "support/skips.hpp"

#include <rdma/rdma_cma.h>

#include <catch2/catch.hpp>

#include <arpa/inet.h>
#include <cstdlib>
#include <functional>
#include <random>
#include <string>

namespace bellows::test {

/// True where an RDMA device exists; inside the rxe guest a missing device is a failure. A test
/// that needs one and finds none reports itself skipped (support/skips.hpp).
inline bool rdma_here() {
  if (verbs::device::open()) return true;
  if (std::getenv("BELLOWS_IN_RXE_GUEST") != nullptr) FAIL("no RDMA device in the rxe guest");
  return false;
}

/// The guest's RDMA address (BELLOWS_RDMA_ADDRESS overrides it) on `port`.
inline sockaddr_in rdma_address(std::uint16_t port) {
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(port);
  const char* text = std::getenv("BELLOWS_RDMA_ADDRESS");
  ::inet_pton(AF_INET, text != nullptr ? text : "192.0.2.1", &a.sin_addr);
  return a;
}

/// A port for a test's listener; tests running at once rarely collide, and a collision fails
/// loudly (address_in_use).
inline std::uint16_t random_port() {
  static std::mt19937 rng(std::random_device{}());
  return static_cast<std::uint16_t>(std::uniform_int_distribution<int>(20000, 60000)(rng));
}

/// rdma://ADDRESS:PORT on the guest's RDMA address.
inline std::string rdma_uri(std::uint16_t port) {
  const char* text = std::getenv("BELLOWS_RDMA_ADDRESS");
  return "rdma://" + std::string(text != nullptr ? text : "192.0.2.1") + ":" + std::to_string(port);
}

/// An id and the verbs objects a connected id needs, destroyed in the order verbs requires:
/// queue pair, then what it owns of completion queue and protection domain, then the id.
struct connection {
  rdma_cm_id* id = nullptr;
  ibv_pd* own_pd = nullptr;
  ibv_cq* own_cq = nullptr;

  connection() = default;
  connection(const connection&) = delete;
  connection& operator=(const connection&) = delete;

  /// A queue pair on `on`; with `cq` (and `srq`) given it uses those and the PD `pd`.
  bool create_queue_pair(rdma_cm_id* on, ibv_pd* pd = nullptr, ibv_cq* cq = nullptr, ibv_srq* srq = nullptr) {
    id = on;
    if (pd == nullptr) pd = own_pd = ::ibv_alloc_pd(on->verbs);
    if (cq == nullptr && pd != nullptr) cq = own_cq = ::ibv_create_cq(on->verbs, 8, nullptr, nullptr, 0);
    if (cq == nullptr) return false;
    ibv_qp_init_attr attr{};
    attr.send_cq = attr.recv_cq = cq;
    attr.srq = srq;
    attr.cap.max_send_wr = attr.cap.max_recv_wr = 8;
    attr.cap.max_send_sge = attr.cap.max_recv_sge = 1;
    attr.cap.max_inline_data = 64;
    attr.qp_type = IBV_QPT_RC;
    return ::rdma_create_qp(on, pd, &attr) == 0;
  }
  ~connection() {
    if (id != nullptr && id->qp != nullptr) ::rdma_destroy_qp(id);
    if (own_cq != nullptr) ::ibv_destroy_cq(own_cq);
    if (own_pd != nullptr) ::ibv_dealloc_pd(own_pd);
    if (id != nullptr) ::rdma_destroy_id(id);
  }
};

inline rdma_conn_param with_private_data(const void* data, std::size_t length) {
  rdma_conn_param p{};
  p.private_data = data;
  p.private_data_len = static_cast<std::uint8_t>(length);
  p.retry_count = 7;
  p.rnr_retry_count = 7;
  return p;
}

inline rdma_conn_param with_private_data(const std::string& text) {
  return with_private_data(text.data(), text.size());
}

/// Makes `listener` an id listening on the guest's address, on a port it returns.
inline std::uint16_t listen_on(verbs::cm_channel& channel, connection& listener) {
  auto id = channel.create_id();
  REQUIRE(id);
  listener.id = *id;
  auto at = rdma_address(0);
  REQUIRE(::rdma_bind_addr(listener.id, reinterpret_cast<sockaddr*>(&at)) == 0);
  REQUIRE(::rdma_listen(listener.id, 8) == 0);
  return ntohs(::rdma_get_src_port(listener.id));
}

/// Connects `client` to `port`: resolves address and route, lets `make_queue_pair` set up the
/// id's queue pair, connects with `hello` as private data; every later event goes to `then`.
inline void connect_to(verbs::cm_channel& channel, connection& client, std::uint16_t port, const std::string& hello,
                       std::function<bool(rdma_cm_id*)> make_queue_pair,
                       std::function<void(const verbs::cm_event&)> then) {
  auto id = channel.create_id();
  REQUIRE(id);
  client.id = *id;
  channel.watch(client.id, [hello, make_queue_pair, then](const verbs::cm_event& e) {
    if (e.type == RDMA_CM_EVENT_ADDR_RESOLVED) {
      REQUIRE(::rdma_resolve_route(e.id, 2000) == 0);
    } else if (e.type == RDMA_CM_EVENT_ROUTE_RESOLVED) {
      REQUIRE(make_queue_pair(e.id));
      auto request = with_private_data(hello);
      REQUIRE(::rdma_connect(e.id, &request) == 0);
    } else {
      then(e);
    }
  });
  auto to = rdma_address(port);
  REQUIRE(::rdma_resolve_addr(client.id, nullptr, reinterpret_cast<sockaddr*>(&to), 2000) == 0);
}

}  // namespace bellows::test
