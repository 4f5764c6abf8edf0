#pragma once
// One measured figure set and how bellows-perf prints it: an aligned table per mode, or one
// JSON object per line (--json) for scripts.

#include <cmath>
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

namespace perf {

struct result {
  result(std::string mode_name, std::string provider_name, std::uint64_t bytes, std::uint64_t count)
      : mode(std::move(mode_name)), provider(std::move(provider_name)), size(bytes), iterations(count) {}
  /// Sets p50, average and p99 from one summary.
  void set_times(double p50, double avg, double p99) {
    p50_us = p50;
    avg_us = avg;
    p99_us = p99;
  }

  std::string mode;      ///< lat, bw, rate, enlarge, scale
  std::string provider;  ///< the URI scheme: shm, rdma
  std::uint64_t size = 0;
  std::uint64_t iterations = 0;
  double p50_us = NAN;
  double avg_us = NAN;
  double p99_us = NAN;
  double mb_per_s = NAN;  ///< 10^6 bytes per second
  double msg_per_s = NAN;
  /// Mode-specific columns (enlarge: tier, handshake, provisioning; scale: memory per channel).
  std::vector<std::pair<std::string, double>> extra;
};

/// Prints as results come: a header whenever the mode or the extra columns change.
class reporter {
 public:
  explicit reporter(bool json) : json_(json) {}
  void add(const result& r);

 private:
  bool json_;
  std::string last_layout_;
};

/// p50, average and p99 of `samples` (sorted in place), in the unit they are in.
struct summary {
  double p50 = NAN, avg = NAN, p99 = NAN;
};
summary summarize(std::vector<double>& samples);

}  // namespace perf
