// A peer that lies in an acknowledgement over rdma://: it grants an enlargement but names a
// key it never registered, a ring larger than its registration, or a misaligned address. The
// honest side's channel fails with protocol_violation (a misaligned ring is refused before
// any write; the others by the liar's device, which writes nothing outside a registration).
// The liar is raw verbs: rdma_cm, the bellows handshake and hand-built acks.

#include "fabric/verbs/cm_channel.hpp"
#include "fabric/verbs/handshake.hpp"
#include "proto/wire.hpp"
#include "support/rdma.hpp"
#include "support/run_until.hpp"

#include <bellows/bellows.hpp>

#include <asio/io_context.hpp>

#include <catch2/catch.hpp>

#include <arpa/inet.h>
#include <cstdlib>
#include <cstring>

using namespace std::chrono_literals;
using namespace bellows::test;
namespace verbs = bellows::verbs;
namespace proto = bellows::proto;

namespace {

enum class ack_lie { forged_key, ring_beyond_registration, misaligned_ring };

const char* to_string(ack_lie l) {
  switch (l) {
    case ack_lie::forged_key: return "a forged key";
    case ack_lie::ring_beyond_registration: return "a ring larger than its registration";
    case ack_lie::misaligned_ring: return "a misaligned ring";
  }
  return "?";
}

/// Page-aligned memory registered on the liar's protection domain.
struct registered {
  void* data = nullptr;
  ibv_mr* mr = nullptr;
  registered(ibv_pd* pd, std::size_t bytes) {
    data = std::aligned_alloc(4096, bytes);
    std::memset(data, 0, bytes);
    mr = ::ibv_reg_mr(pd, data, bytes, IBV_ACCESS_LOCAL_WRITE | IBV_ACCESS_REMOTE_WRITE);
  }
  ~registered() {
    if (mr != nullptr) ::ibv_dereg_mr(mr);
    std::free(data);
  }
  std::byte* bytes() const { return static_cast<std::byte*>(data); }
  std::uint64_t address() const { return reinterpret_cast<std::uintptr_t>(data); }
};

bool post_inline_write(ibv_qp* qp, const void* bytes, std::size_t length, std::uint64_t address, std::uint32_t rkey,
                       std::uint32_t doorbell_channel) {
  ibv_sge sge{reinterpret_cast<std::uintptr_t>(bytes), static_cast<std::uint32_t>(length), 0};
  ibv_send_wr ack{}, doorbell{};
  ack.opcode = IBV_WR_RDMA_WRITE;
  ack.send_flags = IBV_SEND_INLINE;
  ack.sg_list = &sge;
  ack.num_sge = 1;
  ack.wr.rdma.remote_addr = address;
  ack.wr.rdma.rkey = rkey;
  ack.next = &doorbell;
  doorbell.opcode = IBV_WR_RDMA_WRITE_WITH_IMM;
  doorbell.imm_data = htonl(doorbell_channel);
  doorbell.wr.rdma.remote_addr = address;
  doorbell.wr.rdma.rkey = rkey;
  ibv_send_wr* bad = nullptr;
  return ::ibv_post_send(qp, &ack, &bad) == 0;
}

}  // namespace

TEST_CASE("rdma: an ack naming memory the peer never granted fails the send with protocol_violation", "[verbs]") {
  if (!rdma_here()) return skip_case("no RDMA device here; tests/rxe runs this on Soft-RoCE");
  const auto lie = GENERATE(ack_lie::forged_key, ack_lie::ring_beyond_registration, ack_lie::misaligned_ring);
  INFO("the ack names " << to_string(lie));
  asio::io_context io;
  const auto port = random_port();
  bellows::channel_options options;
  options.ack_timeout = 30s;  // the lie, not the timeout, must end the send
  bellows::acceptor acc(io.get_executor(), rdma_uri(port), options);

  // The liar's memory, on rdma_cm's context of the device.
  int device_count = 0;
  ibv_context** contexts = ::rdma_get_devices(&device_count);
  REQUIRE((contexts != nullptr && device_count > 0));
  ibv_pd* pd = ::ibv_alloc_pd(contexts[0]);
  ::rdma_free_devices(contexts);
  REQUIRE(pd != nullptr);
  {
    registered control(pd, 4096), ring(pd, 4096), granted(pd, 4096);
    REQUIRE((control.mr && ring.mr && granted.mr));

    const auto tiers = bellows::default_tiers();
    auto request = verbs::handshake::encode(verbs::open_request{
        7, {control.mr->rkey, control.address()}, {ring.mr->rkey, ring.address()}, std::uint64_t{1} << 32, tiers});
    REQUIRE(request);
    auto cm = verbs::cm_channel::create(io.get_executor());
    REQUIRE(cm);
    connection liar;
    std::optional<verbs::open_answer> answer;
    connect_to(
        **cm, liar, port, std::string(reinterpret_cast<const char*>(request->data()), request->size()),
        [&](rdma_cm_id* id) {
          if (!liar.create_queue_pair(id, pd)) return false;
          // Receives for the honest side's doorbells (zero bytes: only their immediates).
          for (int i = 0; i < 8; ++i) {
            ibv_recv_wr wr{};
            ibv_recv_wr* bad = nullptr;
            if (::ibv_post_recv(id->qp, &wr, &bad) != 0) return false;
          }
          return true;
        },
        [&](const verbs::cm_event& e) {
          if (e.type != RDMA_CM_EVENT_ESTABLISHED) return;
          auto a = verbs::handshake::decode_answer(e.private_data);
          REQUIRE(a);
          answer = *a;
        });
    std::optional<bellows::channel> honest;
    acc.async_accept([&](std::error_code ec, bellows::channel ch) {
      REQUIRE(!ec);
      honest = std::move(ch);
    });
    REQUIRE(run_until(
        io, [&] { return answer && honest; }, 10s));

    // A message for the 1 MiB tier: the honest side asks the liar for an enlargement.
    const std::vector<std::byte> message(100'000, std::byte{0x5a});
    std::optional<std::error_code> sent;
    honest->async_send(asio::buffer(message), [&](std::error_code ec, std::size_t) { sent = ec; });
    const auto* head = ring.bytes();
    REQUIRE(run_until(
        io, [&] { return proto::read_header(head).seq == 1; }, 10s));
    const auto header = proto::read_header(head);
    REQUIRE(header.kind == proto::frame_kind::enlarge_req);
    auto asked = proto::decode_retier(head + proto::header_bytes);
    REQUIRE(asked);

    proto::ack_record ack;
    ack.request_id = asked->request_id;
    ack.status = proto::ack_status::granted;
    ack.tier = asked->tier;
    ack.slot_size = tiers[asked->tier].slot_size;
    ack.slot_count = tiers[asked->tier].slot_count;
    ack.epoch = 1;
    ack.ring_key = granted.mr->rkey;
    ack.ring_address = granted.address();  // 4 KiB registered, where a 1 MiB ring is claimed
    if (lie == ack_lie::forged_key) ack.ring_key ^= 0x5a5a00u;
    if (lie == ack_lie::misaligned_ring) ack.ring_address += 8;
    const auto bytes = proto::encode_ack(ack);
    REQUIRE(post_inline_write(liar.id->qp, bytes.data(), bytes.size(),
                              answer->control.address + proto::control_block::ack_offset, answer->control.key,
                              answer->channel_id));

    // A send completes once its frames are handed to the device, as a socket send does; the
    // liar's device refuses the write afterwards and that breaks the channel.
    REQUIRE(run_until(
        io, [&] { return sent.has_value() && !honest->is_open(); }, 20s));
    CHECK((!*sent || *sent == bellows::error::protocol_violation));
    std::optional<std::error_code> next;
    honest->async_send(asio::buffer(message), [&](std::error_code ec, std::size_t) { next = ec; });
    REQUIRE(run_until(
        io, [&] { return next.has_value(); }, 5s));
    CHECK(*next == bellows::error::protocol_violation);
    // Nothing landed beyond what the liar registered, and with a forged key nothing at all.
    if (lie != ack_lie::ring_beyond_registration)
      CHECK(std::all_of(granted.bytes(), granted.bytes() + 4096, [](std::byte b) { return b == std::byte{0}; }));

    honest.reset();
    acc.close();
    (*cm)->forget(liar.id);
    run_until(
        io, [] { return false; }, 200ms);  // the honest side's link flushes and lets go
  }
  ::ibv_dealloc_pd(pd);
}
