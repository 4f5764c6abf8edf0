#pragma once
// Error codes cannot carry words: async_connect and the acceptor report a malformed URI or
// options as error::invalid_argument. This says which part is wrong, for a log line or a
// message to the user; the acceptor's throwing constructor puts it in its exception.

#include <bellows/detail/export.hpp>
#include <bellows/options.hpp>

#include <string>
#include <string_view>

namespace bellows {

/// Why `uri` and `options` cannot open or accept a channel, naming the part at fault ("shm name
/// longer than 95 bytes", "rdma port 99999 out of range", "tier 2 slot_size 100 is not a power
/// of two"); empty when nothing is wrong with them as written. Names are not resolved and
/// nothing is opened: a host that does not resolve or a peer that is not there is found by the
/// connect itself.
BELLOWS_EXPORT std::string describe_problem(std::string_view uri, const channel_options& options = {});

}  // namespace bellows
