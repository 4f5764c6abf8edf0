#include "progress.hpp"

#include <unistd.h>
#include <cstdio>

namespace file_transfer {

using clock_type = std::chrono::steady_clock;

std::string rate_text(double bytes_per_second) {
  char text[32];
  if (bytes_per_second >= 1e9)
    std::snprintf(text, sizeof text, "%.2f GB/s", bytes_per_second / 1e9);
  else
    std::snprintf(text, sizeof text, "%.0f MB/s", bytes_per_second / 1e6);
  return text;
}

std::string size_text(std::uint64_t bytes) {
  char text[32];
  const double b = static_cast<double>(bytes);
  if (bytes >= (1u << 30))
    std::snprintf(text, sizeof text, "%.2f GiB", b / (1u << 30));
  else if (bytes >= (1u << 20))
    std::snprintf(text, sizeof text, "%.1f MiB", b / (1u << 20));
  else if (bytes >= 1024)
    std::snprintf(text, sizeof text, "%.1f KiB", b / 1024);
  else
    std::snprintf(text, sizeof text, "%llu B", static_cast<unsigned long long>(bytes));
  return text;
}

progress::progress(std::string verb, std::uint64_t total)
    : verb_(std::move(verb)), total_(total), terminal_(::isatty(STDERR_FILENO) == 1), start_(clock_type::now()) {
  last_draw_ = start_;
}

double progress::seconds() const { return std::chrono::duration<double>(clock_type::now() - start_).count(); }

void progress::advance(std::uint64_t bytes) {
  done_ += bytes;
  const auto now = clock_type::now();
  const auto interval = terminal_ ? std::chrono::milliseconds(100) : std::chrono::milliseconds(1000);
  if (now - last_draw_ >= interval) {
    last_draw_ = now;
    draw(false);
  }
}

void progress::draw(bool final) {
  const double elapsed = std::max(seconds(), 1e-9);
  const double rate = static_cast<double>(done_) / elapsed;
  const double fraction = total_ ? static_cast<double>(done_) / static_cast<double>(total_) : 1.0;
  const double eta = rate > 0 ? static_cast<double>(total_ - done_) / rate : 0;
  if (!terminal_) {
    if (!final)
      std::fprintf(stderr, "%s %s of %s (%.0f%%), %s, about %.0f s left\n", verb_.c_str(), size_text(done_).c_str(),
                   size_text(total_).c_str(), fraction * 100, rate_text(rate).c_str(), eta);
    return;
  }
  constexpr int width = 30;
  const int filled = static_cast<int>(fraction * width);
  std::string bar(static_cast<std::size_t>(filled), '#');
  bar.resize(width, '.');
  std::fprintf(stderr, "\r%s [%s] %3.0f%% %s  ETA %3.0f s ", verb_.c_str(), bar.c_str(), fraction * 100,
               rate_text(rate).c_str(), final ? 0.0 : eta);
  if (final) std::fputc('\n', stderr);
}

void progress::finish() {
  draw(true);
  const double elapsed = std::max(seconds(), 1e-9);
  std::fprintf(stderr, "%s %s in %.3f s, %s\n", verb_.c_str(), size_text(done_).c_str(), elapsed,
               rate_text(static_cast<double>(done_) / elapsed).c_str());
}

}  // namespace file_transfer
