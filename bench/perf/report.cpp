#include "report.hpp"

#include <algorithm>
#include <cstdio>
#include <numeric>

namespace perf {

namespace {

void print_number(double v, int width, int precision) {
  if (std::isnan(v))
    std::printf(" %*s", width, "-");
  else
    std::printf(" %*.*f", width, precision, v);
}

void print_json_number(const char* key, double v) {
  if (std::isnan(v))
    std::printf(",\"%s\":null", key);
  else
    std::printf(",\"%s\":%.6g", key, v);
}

}  // namespace

summary summarize(std::vector<double>& samples) {
  summary s;
  if (samples.empty()) return s;
  std::sort(samples.begin(), samples.end());
  s.p50 = samples[samples.size() / 2];
  s.p99 = samples[std::min(samples.size() - 1, samples.size() * 99 / 100)];
  s.avg = std::accumulate(samples.begin(), samples.end(), 0.0) / static_cast<double>(samples.size());
  return s;
}

void reporter::add(const result& r) {
  if (json_) {
    std::printf("{\"mode\":\"%s\",\"provider\":\"%s\",\"size\":%llu,\"iterations\":%llu", r.mode.c_str(),
                r.provider.c_str(), static_cast<unsigned long long>(r.size),
                static_cast<unsigned long long>(r.iterations));
    print_json_number("p50_us", r.p50_us);
    print_json_number("avg_us", r.avg_us);
    print_json_number("p99_us", r.p99_us);
    print_json_number("mb_per_s", r.mb_per_s);
    print_json_number("msg_per_s", r.msg_per_s);
    for (const auto& [key, value] : r.extra) print_json_number(key.c_str(), value);
    std::printf("}\n");
    std::fflush(stdout);
    return;
  }
  std::string layout = r.mode + "/" + r.provider;
  for (const auto& column : r.extra) layout += "/" + column.first;
  if (layout != last_layout_) {
    last_layout_ = layout;
    std::printf("%-8s %-5s %10s %10s %10s %10s %10s %11s %12s", "mode", "prov", "size", "iters", "p50_us", "avg_us",
                "p99_us", "MB/s", "msg/s");
    for (const auto& column : r.extra) std::printf(" %14s", column.first.c_str());
    std::printf("\n");
  }
  std::printf("%-8s %-5s %10llu %10llu", r.mode.c_str(), r.provider.c_str(), static_cast<unsigned long long>(r.size),
              static_cast<unsigned long long>(r.iterations));
  print_number(r.p50_us, 10, 3);
  print_number(r.avg_us, 10, 3);
  print_number(r.p99_us, 10, 3);
  print_number(r.mb_per_s, 11, 1);
  print_number(r.msg_per_s, 12, 0);
  for (const auto& column : r.extra) print_number(column.second, 14, 1);
  std::printf("\n");
  std::fflush(stdout);
}

}  // namespace perf
