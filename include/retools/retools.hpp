#pragma once
// Umbrella header: everything retools offers.

#include <retools/errors.hpp>
#include <retools/reply.hpp>
#include <retools/connection.hpp>
#include <retools/script.hpp>
#include <retools/codec.hpp>
#include <retools/cache.hpp>
#include <retools/lock.hpp>
#include <retools/limiter.hpp>
#include <retools/job.hpp>
#include <retools/queue.hpp>
#include <retools/worker.hpp>
