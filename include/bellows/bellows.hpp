#pragma once
// Umbrella header: everything public in bellows.

#include <bellows/error.hpp>
#include <bellows/tier.hpp>
#include <bellows/version.hpp>
