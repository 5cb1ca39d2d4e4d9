#pragma once
// `retools web`: the dashboard, its JSON API and /metrics.

#include <string>

#include "views.hpp"

namespace retools::tools {

/// Settings of the dashboard server.
struct WebOptions {
    /// Address to listen on; default loopback.
    std::string host = "127.0.0.1";
    /// TCP port; default 9181.
    int port = 9181;
    /// Required on every request when not empty (Bearer header, cookie or ?token=).
    std::string auth_token;
    /// Seconds between refreshes of an open page; default 5.
    int refresh_seconds = 5;
};

/// True for 127.0.0.0/8, ::1 and localhost.
bool is_loopback(const std::string& host);

/// Serves until SIGINT/SIGTERM; returns the exit status.
int serve(const Views& views, const WebOptions& options);

/// The Prometheus text exposition of what `views` reads now.
std::string render_metrics(const Views& views);

}  // namespace retools::tools
