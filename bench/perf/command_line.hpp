#pragma once
// What bellows-perf and asio-baseline share on their command lines and in their pacing, so
// that their figures are taken the same way.

#include <algorithm>
#include <cstdint>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

namespace perf {

/// "64", "64K", "1M", "1G" (powers of 1024).
inline std::uint64_t parse_quantity(const std::string& text) {
  std::size_t used = 0;
  std::uint64_t value = 0;
  // stoull takes "-1" for the largest value.
  if (text.empty() || text.front() < '0' || text.front() > '9')
    throw std::invalid_argument("bad quantity '" + text + "'");
  try {
    value = std::stoull(text, &used);
  } catch (const std::logic_error&) {  // stoull's own message names only itself
    throw std::invalid_argument("bad quantity '" + text + "'");
  }
  const std::string suffix = text.substr(used);
  if (suffix.empty()) return value;
  if (suffix == "K" || suffix == "k") return value << 10;
  if (suffix == "M" || suffix == "m") return value << 20;
  if (suffix == "G" || suffix == "g") return value << 30;
  throw std::invalid_argument("bad quantity '" + text + "'");
}

/// A comma-separated list, each item through `parse`; an empty list is an error.
template <class T, class Parse>
std::vector<T> parse_list(const std::string& text, Parse parse) {
  std::vector<T> items;
  std::istringstream in(text);
  for (std::string item; std::getline(in, item, ',');)
    if (!item.empty()) items.push_back(parse(item));
  if (items.empty()) throw std::invalid_argument("empty list '" + text + "'");
  return items;
}

/// Repetitions of one measurement when none were asked for: enough for a stable median
/// without letting large sizes run for minutes.
inline std::uint64_t default_iterations(const std::string& mode, std::uint64_t size) {
  const auto bounded = [size](std::uint64_t most, std::uint64_t bytes) {
    return std::clamp<std::uint64_t>(bytes / std::max<std::uint64_t>(size, 1), 200, most);
  };
  if (mode == "lat" || mode == "scale") return bounded(100'000, std::uint64_t{256} << 20);
  if (mode == "rate") return 1'000'000;
  if (mode == "enlarge") return 20;
  return bounded(200'000, std::uint64_t{4} << 30);  // bw
}

/// Untimed rounds before a measurement: a tenth of it, between 10 and `most`.
inline std::uint64_t warmup_for(std::uint64_t most, std::uint64_t iterations) {
  return std::min(most, std::max<std::uint64_t>(10, iterations / 10));
}

}  // namespace perf
