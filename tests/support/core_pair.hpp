#pragma once
// Two channel cores whose actions a few lines of test code carry out over plain heap memory (a
// `place` is a memcpy to the address it names, or a pread for a file's bytes), for tests of the core's contract with
// its driver.
#include "proto/channel_core.hpp"

#include <catch2/catch.hpp>

#include <unistd.h>

#include <atomic>
#include <cstring>
#include <functional>
#include <iterator>
#include <map>
#include <optional>
#include <string>
#include <variant>
#include <vector>

namespace bellows::test {

using namespace bellows::proto;

template <class... Fn>
struct overloaded : Fn... {
  using Fn::operator()...;
};
template <class... Fn>
overloaded(Fn...) -> overloaded<Fn...>;

/// One side's memory: a control block and rings, each a heap block whose address is its key.
struct memory {
  std::map<std::uint64_t, std::vector<std::byte>> blocks;
  std::uint64_t next_region = 1;
  local_ring add_ring(std::uint64_t bytes) {
    // Rings are 64-byte aligned, as every provider registers them (the sender checks it).
    auto& b = blocks[next_region];
    b.resize(bytes + 64);
    const auto address = (reinterpret_cast<std::uint64_t>(b.data()) + 63) & ~std::uint64_t{63};
    return local_ring{next_region++, address, address, reinterpret_cast<std::byte*>(address), 0, 0};
  }
};

/// Which kind of action, in order, for compact expectations.
inline std::string names(const std::vector<action>& actions) {
  std::string out;
  for (const auto& a : actions) {
    if (!out.empty()) out += ' ';
    out += std::visit(overloaded{[](const place& p) {
                                   return "place" + std::to_string(p.prefix_length) + (p.has_trailer ? "+t" : "");
                                 },
                                 [](const ring_doorbell&) { return std::string("doorbell"); },
                                 [](const provision&) { return std::string("provision"); },
                                 [](const lend_buffer&) { return std::string("lend"); },
                                 [](const fetch_message&) { return std::string("fetch"); },
                                 [](const check_handover&) { return std::string("handover"); },
                                 [](const release_region&) { return std::string("release"); },
                                 [](const send_done&) { return std::string("send_done"); },
                                 [](const receive_done&) { return std::string("receive_done"); },
                                 [](const view_done&) { return std::string("view_done"); },
                                 [](const close_done&) { return std::string("close_done"); },
                                 [](const tier_changed&) { return std::string("tier"); },
                                 [](const reached& r) { return std::string("@") + to_string(r.step); },
                                 [](const detach&) { return std::string("detach"); }},
                      a);
  }
  return out;
}

/// A message larger than the default tiers' largest frame: offered for direct placement.
inline constexpr std::size_t above_largest_frame = (512 << 10) + 1000;

struct pair_of_cores {
  /// `lending`: the drivers lend receive buffers, so messages above the largest tier's frames
  /// are offered for direct placement.
  explicit pair_of_cores(bool lends = false, bool fetches = false) : lending(lends), fetching(fetches) {
    using namespace std::chrono_literals;
    auto table = *tier_table::make(default_tiers());
    direction_options o{table, 1ms, 1s, 100ms, 1u << 24};
    if (lends || fetches) o.offer_direct_above = table.max_message(table.largest());
    o.offers_are_fetched = fetches;
    local_ring ring[2];
    for (int s = 0; s < 2; ++s) {
      control[s].resize(control_block::size);
      ring[s] = mem[s].add_ring(table[0].ring_bytes());
    }
    for (int s = 0; s < 2; ++s) {
      const int p = 1 - s;
      core_setup setup{ring[s],
                       control[s].data(),
                       control_block::size,
                       0,
                       reinterpret_cast<std::uint64_t>(control[p].data()),
                       remote_ring{ring[p].key, ring[p].address, 0, 0},
                       remote_window{0, 0, UINT64_MAX, true}};
      cores[s].emplace(o, setup, clock_time{});
    }
  }

  /// Carries out side `s`'s actions and returns them, as a driver would.
  std::vector<action> run(int s) {
    std::vector<action> all;
    std::vector<action> batch;
    while (cores[s]->next_batch(batch)) {
      for (auto& a : batch) {
        if (auto* p = std::get_if<place>(&a)) {
          auto* at = reinterpret_cast<std::byte*>(p->address);
          std::memcpy(at, p->prefix().data(), p->prefix_length);
          at += p->prefix_length;
          if (p->source.file.descriptor >= 0)
            REQUIRE(::pread(p->source.file.descriptor, at, p->source_length,
                            static_cast<off_t>(p->source.file.offset + p->source_offset)) ==
                    static_cast<ssize_t>(p->source_length));
          for_each_piece(p->source, p->source_offset, p->source_length, [&](auto piece) {
            std::memcpy(at, piece.data(), piece.size());
            at += piece.size();
          });
          if (p->has_trailer) std::memcpy(reinterpret_cast<std::byte*>(p->trailer_address), p->trailer_bytes.data(), 8);
        }
        if (auto* l = std::get_if<lend_buffer>(&a)) {
          // A place names a raw address here: the lent buffer's own.
          std::optional<lent_region> region;
          if (lending) region = lent_region{next_loan++, 0, reinterpret_cast<std::uint64_t>(l->memory.data())};
          cores[s]->lent(l->offer_id, region);
        }
        if (auto* f = std::get_if<fetch_message>(&a)) {
          // The peer's memory is ours here: the read is a memcpy, the guard a plain load.
          std::memcpy(f->into.data(), reinterpret_cast<const std::byte*>(f->source), f->into.size());
          if (before_guard_check) before_guard_check();
          const auto* guard = reinterpret_cast<const std::atomic<std::uint64_t>*>(f->guard_address);
          cores[s]->fetched(f->offer_id, fetching && guard->load() == f->guard_value);
        }
        if (auto* h = std::get_if<check_handover>(&a)) cores[s]->handed_over(h->offer_id, !holds_unsent, clock_time{});
        if (auto* p = std::get_if<provision>(&a)) {
          auto ring = mem[s].add_ring(p->bytes);
          ring.tier = p->request.tier;
          cores[s]->provisioned(p->request, ring, false);
        }
        all.push_back(std::move(a));
      }
    }
    return all;
  }

  static detail::scatter into(std::vector<std::byte>& buffer) {
    detail::scatter s;
    s.single = buffer;
    s.length = buffer.size();
    return s;
  }

  static detail::gather ranges(const std::vector<std::byte>& bytes) {
    detail::gather g;
    g.single = bytes;
    g.length = bytes.size();
    return g;
  }

  bool lending = false;
  /// Offers are fetched: the driver reads the sender's buffer, then checks the guard word (a
  /// false `fetching` makes every read fail, as a peer that may not read ours).
  bool fetching = false;
  /// Runs between a fetch's read and its guard check: where a test lets the sender withdraw.
  std::function<void()> before_guard_check;
  /// What the driver answers a check_handover: the provider still holds bytes of the write
  /// (tcp: the socket did not take them all), so the send completes on the receipt.
  bool holds_unsent = false;
  std::uint64_t next_loan = 1000;
  memory mem[2];
  std::vector<std::byte> control[2];
  std::optional<channel_core> cores[2];
};

/// Polls both sides until `done` holds, at most `rounds` times; `seen` gets each side's actions.
template <class Done>
bool exchange(pair_of_cores& c, Done done, std::vector<action>* seen = nullptr, int rounds = 200) {
  for (int i = 0; i < rounds && !done(); ++i) {
    for (int s : {1, 0}) {
      c.cores[s]->poll(clock_time{});
      auto actions = c.run(s);
      if (seen) std::move(actions.begin(), actions.end(), std::back_inserter(seen[s]));
    }
  }
  return done();
}

/// The first action of type `Done` in `actions`, or null.
template <class Done>
const Done* find_done(const std::vector<action>& actions) {
  for (const auto& a : actions)
    if (auto* d = std::get_if<Done>(&a)) return d;
  return nullptr;
}

}  // namespace bellows::test
