#include "fabric/registry.hpp"

#include "fabric/shm/connector.hpp"
#include "fabric/tcp/connector.hpp"
#include "fabric/verbs/connector.hpp"

namespace bellows::fabric {

std::optional<uri_parts> split_uri(std::string_view uri) {
  const auto end = uri.find("://");
  if (end == std::string_view::npos || end == 0 || uri.find('\0') != std::string_view::npos) return std::nullopt;
  return uri_parts{uri.substr(0, end), uri.substr(end + 3)};
}

std::unique_ptr<connector> make_connector(std::string_view scheme, const host& h) {
  if (scheme == "shm") return std::make_unique<shm::connector>(h);
  if (scheme == "rdma") return std::make_unique<verbs::connector>(h);
  if (scheme == "tcp") return std::make_unique<tcp::connector>(h);
  return nullptr;
}

}  // namespace bellows::fabric
