// bellows protocol walk-through over the deterministic simulator (bellows_sim_demo): A sends a
// sweep of message sizes to B, then falls quiet; the output narrates, message by message, the tier each
// direction is on, each enlargement's request, acknowledgement and completion, the shrink
// after idle, and the registered bytes of each endpoint.
#include "sim/world.hpp"

#include <cstdio>
#include <string>
#include <vector>

using namespace bellows;
using namespace bellows::sim;
using namespace std::chrono_literals;

namespace {

std::string human(std::uint64_t bytes) {
  char buf[32];
  if (bytes >= (1u << 20) && bytes % (1u << 20) == 0)
    std::snprintf(buf, sizeof buf, "%llu MiB", static_cast<unsigned long long>(bytes >> 20));
  else if (bytes >= 1024 && bytes % 1024 == 0)
    std::snprintf(buf, sizeof buf, "%llu KiB", static_cast<unsigned long long>(bytes >> 10));
  else
    std::snprintf(buf, sizeof buf, "%llu B", static_cast<unsigned long long>(bytes));
  return buf;
}

double micros(clock_time t) { return static_cast<double>(t.count()) / 1000.0; }

}  // namespace

int main(int argc, char** argv) {
  if (argc > 1) {
    const bool help = argc == 2 && (std::string(argv[1]) == "--help" || std::string(argv[1]) == "-h");
    std::fprintf(help ? stdout : stderr,
                 "%susage: bellows_sim_demo\n  Walks through the protocol over the simulator; takes no arguments.\n",
                 help ? "" : "bellows_sim_demo: takes no arguments\n");
    return help ? 0 : 2;
  }
  world_options options;
  options.idle_shrink_after = 2ms;
  options.faults.provision_delay_min = 20us;  // registering a ring takes a moment
  options.faults.provision_delay_max = 40us;
  world w(options);
  const auto& tiers = w.tiers();
  auto tier_name = [&](std::uint32_t t) {
    return "tier " + std::to_string(t) + " (" + human(tiers[t].ring_bytes()) + ")";
  };

  std::printf("bellows demo over the simulator: tiers");
  for (std::size_t t = 0; t < tiers.size(); ++t)
    std::printf(" %zu=%ux%s", t, tiers[t].slot_count, human(tiers[t].slot_size).c_str());
  std::printf("\nevery channel direction starts on %s; A sends to B, B answers with 8 B\n\n", tier_name(0).c_str());

  clock_time requested_at{};
  w.on_trace = [&](const trace_event& e) {
    using what = trace_event::what;
    const double t = micros(e.at);
    switch (e.kind) {
      case what::enlarge_requested:
        requested_at = e.at;
        std::printf("  %9.1f us  %s: ENLARGE_REQ %s -> %s for a %s message\n", t, to_string(e.where),
                    tier_name(e.from_tier).c_str(), tier_name(e.to_tier).c_str(), human(e.bytes).c_str());
        break;
      case what::shrink_requested:
        requested_at = e.at;
        std::printf("  %9.1f us  %s: idle for %lld ms, SHRINK_REQ %s -> %s\n", t, to_string(e.where),
                    static_cast<long long>(options.idle_shrink_after / 1ms), tier_name(e.from_tier).c_str(),
                    tier_name(e.to_tier).c_str());
        break;
      case what::provisioned:
        std::printf("  %9.1f us  %s: provisioned and registered %s, ack written (head, fields, tail)\n", t,
                    to_string(e.where), tier_name(e.to_tier).c_str());
        break;
      case what::acked_granted:
        std::printf("  %9.1f us  %s: ack seen, now sending on %s (handshake %.1f us)\n", t, to_string(e.where),
                    tier_name(e.to_tier).c_str(), micros(e.at - requested_at));
        break;
      case what::acked_denied:
        std::printf("  %9.1f us  %s: enlargement denied, fragmenting instead\n", t, to_string(e.where));
        break;
      case what::ring_released:
        std::printf("  %9.1f us  %s: old ring unregistered after its last frame was released\n", t, to_string(e.where));
        break;
      default: break;
    }
  };

  auto status = [&](const char* label) {
    std::printf("  %-30s A->B %-22s B->A %-22s registered A %-9s B %s\n", label,
                tier_name(w.send_tier(side::a)).c_str(), tier_name(w.send_tier(side::b)).c_str(),
                human(w.registered_bytes(side::a)).c_str(), human(w.registered_bytes(side::b)).c_str());
  };

  const std::vector<std::size_t> sweep{8, 1000, 3000, 40 * 1024, 100 * 1024, 500 * 1024, 4 << 20, 64, 8};
  status("at connect");
  std::uint64_t sent = 0;
  for (std::size_t size : sweep) {
    std::printf("message %llu: %s from A\n", static_cast<unsigned long long>(sent + 1), human(size).c_str());
    w.send(side::a, std::vector<std::byte>(size, std::byte{0x5a}));
    ++sent;
    if (!w.run_until([&] { return w.report(side::b).delivered == sent; }, 1s)) {
      std::printf("message %llu was not delivered\n", static_cast<unsigned long long>(sent));
      return 1;
    }
    const auto reply_target = w.report(side::a).delivered + 1;
    w.send(side::b, std::vector<std::byte>(8, std::byte{1}));
    w.run_until([&] { return w.report(side::a).delivered == reply_target; }, 1s);
    status("delivered intact");
  }
  std::printf("A falls quiet\n");
  w.run_until([&] { return w.send_tier(side::a) == 0 && w.idle(); }, 1s);
  status("after idle");

  const auto& r = w.report(side::b);
  const std::size_t fixed = 2 * (256 * 1024 + 128);
  std::printf(
      "\n%llu messages (%s) delivered A->B, %llu mismatches; idle registered memory %s for both endpoints "
      "vs %s for a fixed 256 KiB-per-direction design\n",
      static_cast<unsigned long long>(r.delivered), human(r.delivered_bytes).c_str(),
      static_cast<unsigned long long>(r.mismatches),
      human(w.registered_bytes(side::a) + w.registered_bytes(side::b)).c_str(), human(fixed).c_str());
  return r.mismatches == 0 && w.check_invariants().empty() ? 0 : 1;
}
