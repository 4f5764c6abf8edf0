// The per-reactor completion source on a real device: an RDMA WRITE WITH IMMEDIATE lands in the
// peer's registered memory and its immediate (the channel id) comes out of the peer's shared
// receive queue as a doorbell; a write naming a key the peer never granted fails.

#include "fabric/verbs/cm_channel.hpp"
#include "fabric/verbs/completion_source.hpp"
#include "support/raw_opener.hpp"
#include "support/run_until.hpp"

#include <asio/io_context.hpp>

#include <catch2/catch.hpp>

#include <arpa/inet.h>
#include <chrono>
#include <cstring>
#include <functional>
#include <memory>
#include <vector>

using namespace std::chrono_literals;
using namespace bellows::test;
using bellows::verbs::cm_channel;
using bellows::verbs::cm_event;
using bellows::verbs::completion_event;
using bellows::verbs::completion_source;

namespace {

struct pd_owner {
  ibv_pd* pd = nullptr;
  ~pd_owner() {
    if (pd != nullptr) ::ibv_dealloc_pd(pd);
  }
};

/// Where the server's ring is, as its accept's private data says.
struct granted_ring {
  std::uint32_t rkey;
  std::uint64_t address;
};

/// Polls `source`, sleeping on its descriptor between completions, until the source is cancelled.
void keep_listening(const std::shared_ptr<completion_source>& source,
                    std::function<void(const completion_event&)> report) {
  auto again = std::make_shared<std::function<void()>>();
  *again = [source, report, again] {
    while (source->poll(report) > 0) {
    }
    REQUIRE(source->sleep_until_completion([again] { (*again)(); }));
    source->poll(report);  // what completed before the request raised no notification
  };
  (*again)();
}

bool post_write(rdma_cm_id* id, const std::vector<std::byte>& payload, granted_ring to, std::uint32_t imm,
                std::uint64_t wr_id) {
  ibv_sge sge{reinterpret_cast<std::uintptr_t>(payload.data()), static_cast<std::uint32_t>(payload.size()), 0};
  ibv_send_wr wr{};
  wr.wr_id = wr_id;
  wr.opcode = IBV_WR_RDMA_WRITE_WITH_IMM;
  wr.send_flags = IBV_SEND_INLINE | IBV_SEND_SIGNALED;  // inline: no local registration needed
  wr.sg_list = &sge;
  wr.num_sge = 1;
  wr.imm_data = htonl(imm);
  wr.wr.rdma.remote_addr = to.address;
  wr.wr.rdma.rkey = to.rkey;
  ibv_send_wr* bad = nullptr;
  return ::ibv_post_send(id->qp, &wr, &bad) == 0;
}

}  // namespace

TEST_CASE("verbs: a write with immediate lands in the ring and rings the peer's completion source", "[verbs]") {
  if (!rdma_here()) return skip_case("no RDMA device here; tests/rxe runs this on Soft-RoCE");
  asio::io_context io;
  auto cm = cm_channel::create(io.get_executor());
  REQUIRE(cm);
  auto& channel = **cm;
  connection listener;
  const std::uint16_t port = listen_on(channel, listener);
  REQUIRE(listener.id->verbs != nullptr);

  // Declared in the order they must be destroyed backwards: queue pairs go first, then the
  // completion sources (CQ, SRQ), the registrations, the protection domain.
  pd_owner domain{::ibv_alloc_pd(listener.id->verbs)};
  REQUIRE(domain.pd != nullptr);
  auto server_source = completion_source::create(io.get_executor(), listener.id->verbs, domain.pd);
  auto client_source = completion_source::create(io.get_executor(), listener.id->verbs, domain.pd);
  REQUIRE((server_source && client_source));
  // A plain registration: bellows' own blocks are written only through memory windows.
  registered ring(domain.pd, 4096);
  REQUIRE(ring.mr != nullptr);
  connection server, client;

  std::vector<completion_event> server_events, client_events;
  keep_listening(*server_source, [&](const completion_event& e) { server_events.push_back(e); });
  keep_listening(*client_source, [&](const completion_event& e) { client_events.push_back(e); });

  const granted_ring grant{ring.mr->rkey, ring.address()};
  channel.watch(listener.id, [&](const cm_event& e) {
    REQUIRE(e.type == RDMA_CM_EVENT_CONNECT_REQUEST);
    REQUIRE(
        server.create_queue_pair(e.id, domain.pd, (*server_source)->queue(), (*server_source)->shared_receive_queue()));
    channel.watch(e.id, [](const cm_event&) {});
    auto answer = with_private_data(&grant, sizeof grant);
    REQUIRE(::rdma_accept(e.id, &answer) == 0);
  });

  std::vector<std::byte> payload(48);
  for (std::size_t i = 0; i < payload.size(); ++i) payload[i] = static_cast<std::byte>(i * 7 + 1);
  granted_ring told{};
  bool connected = false;
  connect_to(
      channel, client, port, "bellows-open",
      [&](rdma_cm_id* id) {
        return client.create_queue_pair(id, domain.pd, (*client_source)->queue(),
                                        (*client_source)->shared_receive_queue());
      },
      [&](const cm_event& e) {
        if (e.type != RDMA_CM_EVENT_ESTABLISHED) return;
        REQUIRE(e.private_data.size() >= sizeof told);
        std::memcpy(&told, e.private_data.data(), sizeof told);
        connected = true;
        REQUIRE(post_write(e.id, payload, told, 42, 1));
      });

  REQUIRE(run_until(
      io, [&] { return !server_events.empty() && !client_events.empty(); }, 5s));
  CHECK(connected);
  REQUIRE(server_events.size() == 1);
  CHECK(server_events[0].kind == completion_event::what::doorbell);
  CHECK(server_events[0].channel == 42);
  CHECK(server_events[0].qp_num == server.id->qp->qp_num);
  CHECK(std::memcmp(ring.bytes(), payload.data(), payload.size()) == 0);
  REQUIRE(client_events.size() == 1);
  CHECK(client_events[0].kind == completion_event::what::write_done);
  CHECK(client_events[0].wr_id == 1);

  // A key the server never granted: the write fails on the client, nothing lands.
  granted_ring forged = told;
  forged.rkey ^= 0x5a5a00u;
  std::memset(ring.bytes(), 0, payload.size());
  REQUIRE(post_write(client.id, payload, forged, 43, 2));
  REQUIRE(run_until(
      io, [&] { return client_events.size() >= 2; }, 5s));
  CHECK(client_events[1].kind == completion_event::what::failed);
  CHECK(client_events[1].wr_id == 2);
  CHECK(client_events[1].ec == std::errc::permission_denied);
  CHECK(std::all_of(ring.bytes(), ring.bytes() + payload.size(), [](std::byte b) { return b == std::byte{0}; }));
  // No doorbell for a write that never landed. (The server may hear of the failure: its
  // doorbell receive completes in error when the connection breaks.)
  for (std::size_t i = 1; i < server_events.size(); ++i) {
    CAPTURE(i, static_cast<int>(server_events[i].kind), server_events[i].ec.message());
    CHECK(server_events[i].kind == completion_event::what::failed);
  }

  (*server_source)->cancel_sleep();
  (*client_source)->cancel_sleep();
  for (auto* id : {listener.id, server.id, client.id}) channel.forget(id);
  io.restart();
  io.poll();  // the cancelled waits let go of their sources
}
