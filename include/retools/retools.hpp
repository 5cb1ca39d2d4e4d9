#pragma once
// Umbrella header: everything retools offers.

#include <retools/errors.hpp>
#include <retools/reply.hpp>
#include <retools/connection.hpp>
#include <retools/script.hpp>
#include <retools/job.hpp>
#include <retools/queue.hpp>
#include <retools/worker.hpp>
