// Connection: one command, a pipeline, and threads sharing one Connection,
// each beside raw hiredis doing the same round trips.

#include <memory>
#include <string>

#include <retools/connection.hpp>

#include "raw.hpp"
#include "latency_proxy.hpp"
#include "rows.hpp"

namespace bench {
namespace {

constexpr std::size_t kPipelineDepth = 100;

Run conn_get(const Env& env, std::size_t count) {
    env.conn.command("SET", "bench:conn:key", "value");
    return {time_it([&] {
                for (std::size_t i = 0; i < count; ++i) env.conn.command("GET", "bench:conn:key");
            }),
            {}};
}

template <Transport T = Transport::plain>
Run raw_get(const Env& env, std::size_t count) {
    RawConnection raw(env, T);
    raw.cmd("SET", "bench:conn:key", "value");
    raw.read();
    return {time_it([&] {
                for (std::size_t i = 0; i < count; ++i) {
                    raw.cmd("GET", "bench:conn:key");
                    raw.read();
                }
            }),
            {}};
}

Run conn_pipeline(const Env& env, std::size_t count) {
    retools::Pipeline p;
    return {time_it([&] {
                for (std::size_t done = 0; done < count; done += kPipelineDepth) {
                    p.clear();
                    for (std::size_t i = 0; i < kPipelineDepth; ++i)
                        p.command("SET", "bench:conn:key", "value");
                    env.conn.execute(p);
                }
            }),
            {}};
}

Run raw_pipeline(const Env& env, std::size_t count) {
    RawConnection raw(env);
    return {time_it([&] {
                for (std::size_t done = 0; done < count; done += kPipelineDepth) {
                    for (std::size_t i = 0; i < kPipelineDepth; ++i)
                        raw.cmd("SET", "bench:conn:key", "value");
                    raw.read(kPipelineDepth);
                }
            }),
            {}};
}

// GET over TLS: a fresh pool on the server's TLS port (handshake before the clock starts).
Run conn_get_tls(const Env& env, std::size_t count) {
    retools::Connection tls{env.tls_url};
    tls.command("SET", "bench:conn:key", "value");
    return {time_it([&] {
                for (std::size_t i = 0; i < count; ++i) tls.command("GET", "bench:conn:key");
            }),
            {}};
}

// GETs from `threads` threads sharing one Connection made of `options`.
Run shared_gets(const retools::ConnectionOptions& options, std::size_t threads, std::size_t count) {
    retools::Connection shared{options};
    shared.command("SET", "bench:conn:key", "value");
    return Run{run_threads(threads, count,
                           [&](std::size_t, std::size_t ops) {
                               for (std::size_t i = 0; i < ops; ++i) shared.command("GET", "bench:conn:key");
                           }),
               {}};
}

// `multiplex`: the default engine; false: a pool of `pool_size` leased sockets.
// `one_way` > 0: through a LatencyProxy adding that much each way.
RunFn conn_threads(std::size_t threads, bool multiplex, std::chrono::microseconds one_way = {},
                   std::size_t pool_size = 16) {
    return [=](const Env& env, std::size_t count) {
        retools::ConnectionOptions options = env.conn.options();
        options.multiplex = multiplex;
        options.pool_size = pool_size;
        if (one_way.count() == 0) return shared_gets(options, threads, count);
        retools::test::LatencyProxy proxy{env.port, one_way};
        options.host = "127.0.0.1";
        options.port = proxy.port();
        return shared_gets(options, threads, count);
    };
}

RunFn raw_threads(std::size_t threads) {
    return [threads](const Env& env, std::size_t count) {
        std::vector<std::unique_ptr<RawConnection>> raws;
        for (std::size_t t = 0; t < threads; ++t) raws.push_back(std::make_unique<RawConnection>(env));
        raws[0]->cmd("SET", "bench:conn:key", "value");
        raws[0]->read();
        return Run{run_threads(threads, count,
                               [&](std::size_t t, std::size_t ops) {
                                   RawConnection& raw = *raws[t];
                                   for (std::size_t i = 0; i < ops; ++i) {
                                       raw.cmd("GET", "bench:conn:key");
                                       raw.read();
                                   }
                               }),
                   {}};
    };
}

}  // namespace

void add_connection_rows(const Env& env, std::vector<Row>& rows) {
    std::size_t n = env.counts.ops;
    rows.push_back({.id = "conn_get",
                    .label = "Connection: one command (GET)",
                    .count = n,
                    .retools = conn_get,
                    .floor = raw_get<>,
                    .floor_target = 0.9});
    rows.push_back({.id = "conn_pipeline",
                    .label = "Connection: pipeline of 100 SET",
                    .unit = "commands/s",
                    .count = (n / kPipelineDepth + 1) * kPipelineDepth * 5,
                    .retools = conn_pipeline,
                    .floor = raw_pipeline,
                    .floor_target = 0.9});
    if (!env.tls_url.empty())
        rows.push_back({.id = "conn_get_tls",
                        .label = "Connection: one command (GET) over TLS, floor plain TCP",
                        .count = n,
                        .retools = conn_get_tls,
                        .floor = raw_get<>,
                        .floor_target = 0.8});
    if (!env.tls_url.empty())
        rows.push_back({.id = "conn_get_tls_floor_tls",
                        .label = "Connection: one command (GET) over TLS, floor raw TLS",
                        .count = n,
                        .retools = conn_get_tls,
                        .floor = raw_get<Transport::tls>,
                        .floor_target = 0.9});
    for (std::size_t threads : {1, 4, 16, 64}) {
        const auto what = fmt::format("Connection: GET, {} thread{} sharing one Connection", threads,
                                      threads > 1 ? "s" : "");
        rows.push_back({.id = "conn_threads_" + std::to_string(threads),
                        .label = what + ", floor a raw socket per thread",
                        .count = n * 2,
                        .retools = conn_threads(threads, true),
                        .floor = raw_threads(threads),
                        .floor_target = threads == 1 ? 0.9 : threads >= 16 ? 2.5 : 0});
        rows.push_back({.id = "conn_threads_" + std::to_string(threads) + "_vs_pool",
                        .label = what + ", floor multiplex = false",
                        .count = n * 2,
                        .retools = conn_threads(threads, true),
                        .floor = conn_threads(threads, false)});
    }
    // A network 1 ms round trip away: multiplexing pays for itself when
    // there are more threads than pooled sockets.
    for (std::size_t threads : {16, 64})
        rows.push_back({.id = fmt::format("conn_net_threads_{}", threads),
                        .label = fmt::format("Connection: GET through 1 ms of network, {} threads, floor "
                                             "multiplex = false with 16 sockets",
                                             threads),
                        .count = n / 2,
                        .retools = conn_threads(threads, true, std::chrono::microseconds(500)),
                        .floor = conn_threads(threads, false, std::chrono::microseconds(500)),
                        .floor_target = threads == 64 ? 3.5 : 0});
}

}  // namespace bench
