#pragma once
// The providers bellows knows, by URI scheme. The only place that names them.

#include "fabric/connector.hpp"

#include <memory>
#include <optional>
#include <string_view>

namespace bellows::fabric {

/// SCHEME://ADDRESS, split; nothing for a string without a scheme or with a NUL in it.
struct uri_parts {
  std::string_view scheme;
  std::string_view address;
};
std::optional<uri_parts> split_uri(std::string_view uri);

/// The connector for `scheme` ("shm", "rdma"), or null for a scheme nobody provides.
std::unique_ptr<connector> make_connector(std::string_view scheme, const host& h);

}  // namespace bellows::fabric
