#pragma once
// Umbrella header: everything retools offers.

#include <retools/cache.hpp>
#include <retools/codec.hpp>
#include <retools/connection.hpp>
#include <retools/errors.hpp>
#include <retools/job.hpp>
#include <retools/limiter.hpp>
#include <retools/lock.hpp>
#include <retools/log.hpp>
#include <retools/pickle.hpp>
#include <retools/queue.hpp>
#include <retools/rate_limiter.hpp>
#include <retools/read_write_lock.hpp>
#include <retools/reply.hpp>
#include <retools/script.hpp>
#include <retools/worker.hpp>
