#pragma once
// Everything a bellows application needs.

#include <bellows/acceptor.hpp>
#include <bellows/channel.hpp>
#include <bellows/connect.hpp>
#include <bellows/describe_problem.hpp>
#include <bellows/endpoint.hpp>
#include <bellows/error.hpp>
#include <bellows/message_view.hpp>
#include <bellows/options.hpp>
#include <bellows/stats.hpp>
#include <bellows/tier.hpp>
#include <bellows/tier_event.hpp>
#include <bellows/version.hpp>
