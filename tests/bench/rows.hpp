#pragma once
// Each bench_<component>.cpp adds its rows to the table.

#include <vector>

#include "harness.hpp"

namespace bench {

void add_connection_rows(const Env& env, std::vector<Row>& rows);
void add_lock_rows(const Env& env, std::vector<Row>& rows);
void add_cache_rows(const Env& env, std::vector<Row>& rows);
void add_queue_rows(const Env& env, std::vector<Row>& rows);
void add_worker_rows(const Env& env, std::vector<Row>& rows);
void add_cluster_rows(const Env& env, std::vector<Row>& rows);

}  // namespace bench
