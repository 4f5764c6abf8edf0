#pragma once
// Progress of one transfer on stderr: a bar with rate and ETA redrawn in place on a terminal,
// a plain line every second otherwise (logs, CI), and a summary at the end.

#include <chrono>
#include <cstdint>
#include <string>

namespace file_transfer {

class progress {
 public:
  progress(std::string verb, std::uint64_t total);
  void advance(std::uint64_t bytes);
  /// Ends the bar and prints "<verb> N bytes in T s, R".
  void finish();
  double seconds() const;

 private:
  void draw(bool final);

  std::string verb_;
  std::uint64_t total_;
  std::uint64_t done_ = 0;
  bool terminal_;
  std::chrono::steady_clock::time_point start_, last_draw_;
};

/// "1.5 GB/s", "730 MB/s"
std::string rate_text(double bytes_per_second);
/// "1.00 GiB", "64.0 MiB", "12 B"
std::string size_text(std::uint64_t bytes);

}  // namespace file_transfer
