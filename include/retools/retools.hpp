#pragma once
// Umbrella header: everything retools offers.

#include <retools/errors.hpp>
#include <retools/reply.hpp>
#include <retools/connection.hpp>
#include <retools/script.hpp>
#include <retools/lock.hpp>
#include <retools/limiter.hpp>
