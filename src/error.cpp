#include <bellows/error.hpp>

#include <string>

namespace bellows {
namespace {

class bellows_category final : public std::error_category {
 public:
  const char* name() const noexcept override { return "bellows"; }

  std::string message(int value) const override {
    switch (static_cast<error>(value)) {
      case error::protocol_violation: return "peer violated the bellows protocol";
      case error::enlarge_timeout: return "buffer enlargement was not acknowledged in time";
      case error::message_size: return "message larger than the receive buffer or the channel's maximum message size";
      case error::connection_reset: return "connection reset by peer";
      case error::end_of_stream: return "peer closed the channel";
      case error::channel_closed: return "channel closed";
      case error::budget_exhausted: return "registered memory budget exhausted";
      case error::invalid_argument: return "invalid argument";
      case error::file_truncated: return "the file ended before the range being sent";
      case error::authentication_failed: return "the peer did not prove it holds the same pre-shared key";
    }
    return "unknown bellows error";
  }
};

}  // namespace

const std::error_category& error_category() noexcept {
  static const bellows_category category;
  return category;
}

}  // namespace bellows
