// `retools web`: the dashboard server (cpp-httplib), its JSON API and /metrics.
//
// Security: loopback by default; with a token every request must carry it
// (Authorization: Bearer, the cookie set by the login form, or ?token= once);
// without one, the Host header must name a loopback address (no DNS
// rebinding). Every state change is a POST carrying the per-process CSRF
// token, from this origin. Pages escape every value; app.js builds DOM nodes
// with textContent only. Responses forbid framing, sniffing and caching.
#include "web.hpp"

#include <httplib.h>
#include <pthread.h>
#include <signal.h>
#include <sys/socket.h>

#include <atomic>
#include <cstdio>
#include <iostream>
#include <thread>

#include <fmt/format.h>

#include "util/random_token.hpp"
#include <retools/errors.hpp>

#include "assets.hpp"
#include "format.hpp"
#include "pages.hpp"

namespace retools::tools {

using nlohmann::json;

namespace {

constexpr const char* cookie_name = "retools_token";

bool equal_constant_time(std::string_view a, std::string_view b) {
    if (a.size() != b.size() || b.empty()) return false;
    unsigned char diff = 0;
    for (std::size_t i = 0; i < a.size(); ++i) diff |= static_cast<unsigned char>(a[i] ^ b[i]);
    return diff == 0;
}

std::string cookie_value(const httplib::Request& req, std::string_view name) {
    std::string cookies = req.get_header_value("Cookie");
    std::string_view rest = cookies;
    while (!rest.empty()) {
        auto semi = rest.find(';');
        std::string_view part = rest.substr(0, semi);
        while (!part.empty() && part.front() == ' ') part.remove_prefix(1);
        if (part.size() > name.size() && part.substr(0, name.size()) == name && part[name.size()] == '=')
            return std::string(part.substr(name.size() + 1));
        if (semi == std::string_view::npos) break;
        rest.remove_prefix(semi + 1);
    }
    return {};
}

// The host part of a Host header (`127.0.0.1:9181`, `[::1]:9181`, `localhost`).
std::string host_part(const std::string& header) {
    if (!header.empty() && header.front() == '[') {
        auto close = header.find(']');
        return close == std::string::npos ? header : header.substr(1, close - 1);
    }
    return header.substr(0, header.find(':'));
}

std::string lower(std::string s) {
    for (char& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    return s;
}

void forbid(httplib::Response& res, std::string_view why) {
    res.status = 403;
    res.set_content(fmt::format("403 Forbidden: {}\n", why), "text/plain; charset=utf-8");
}

struct Server {
    const Views& views;
    const WebOptions& options;
    std::string csrf = detail::uuid4_hex() + detail::uuid4_hex();
    httplib::Server http;

    bool authorized(const httplib::Request& req) const {
        if (options.auth_token.empty()) return true;
        std::string auth = req.get_header_value("Authorization");
        if (auth.starts_with("Bearer ") && equal_constant_time(auth.substr(7), options.auth_token))
            return true;
        if (equal_constant_time(cookie_value(req, cookie_name), options.auth_token)) return true;
        return req.has_param("token") &&
               equal_constant_time(req.get_param_value("token"), options.auth_token);
    }

    bool host_allowed(const httplib::Request& req) const {
        if (!options.auth_token.empty()) return true;
        std::string host = lower(host_part(req.get_header_value("Host")));
        return host == "localhost" || host == "::1" || host.starts_with("127.") ||
               host == lower(options.host);
    }

    std::string cookie(const std::string& token) const {
        return fmt::format("{}={}; Path=/; HttpOnly; SameSite=Strict", cookie_name, token);
    }

    // Before routing: the Host check, then the token (the login form and the
    // static assets excepted).
    httplib::Server::HandlerResponse gate(const httplib::Request& req, httplib::Response& res) {
        if (!host_allowed(req)) {
            forbid(res, "the Host header does not name this server (set --auth-token to serve other names)");
            return httplib::Server::HandlerResponse::Handled;
        }
        if (req.path == "/login" || req.path.starts_with("/assets/"))
            return httplib::Server::HandlerResponse::Unhandled;
        if (!authorized(req)) {
            res.status = 403;
            bool html = req.method == "GET" && !req.path.starts_with("/api/") && req.path != "/metrics";
            if (html)
                res.set_content(render_login(req.has_param("token") ? "Wrong token." : ""),
                                "text/html; charset=utf-8");
            else
                res.set_content("403 Forbidden: missing or wrong access token\n",
                                "text/plain; charset=utf-8");
            return httplib::Server::HandlerResponse::Handled;
        }
        // ?token= on a page: remember it in a cookie and drop it from the address bar.
        if (req.method == "GET" && req.has_param("token") && !options.auth_token.empty()) {
            res.set_header("Set-Cookie", cookie(options.auth_token));
            res.set_redirect(req.path, 303);
            return httplib::Server::HandlerResponse::Handled;
        }
        return httplib::Server::HandlerResponse::Unhandled;
    }

    // A state change must come from a form of this dashboard: the CSRF token,
    // and (when the browser says) this origin.
    bool post_allowed(const httplib::Request& req, httplib::Params& form, httplib::Response& res) const {
        httplib::detail::parse_query_text(req.body, form);
        auto it = form.find("csrf");
        if (it == form.end() || !equal_constant_time(it->second, csrf)) {
            forbid(res, "missing or wrong CSRF token");
            return false;
        }
        std::string origin = req.get_header_value("Origin");
        if (!origin.empty() && origin != "null") {
            std::string host = req.get_header_value("Host");
            if (origin != "http://" + host && origin != "https://" + host) {
                forbid(res, "cross-origin request");
                return false;
            }
        }
        return true;
    }

    void page(const std::string& name, const httplib::Request&, httplib::Response& res) {
        json model = page_model(name, page_data(views, name));
        res.set_content(render_page(model, views.server(), csrf, options.refresh_seconds),
                        "text/html; charset=utf-8");
    }

    void done(httplib::Response& res, const std::string& back) { res.set_redirect(back, 303); }

    void routes() {
        http.set_pre_routing_handler([this](const auto& req, auto& res) { return gate(req, res); });
        http.set_post_routing_handler([](const auto&, auto& res) {
            res.set_header("X-Content-Type-Options", "nosniff");
            res.set_header("X-Frame-Options", "DENY");
            res.set_header("Referrer-Policy", "no-referrer");
            res.set_header("Cache-Control", "no-store");
            res.set_header("Content-Security-Policy",
                           "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
                           "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'");
        });
        http.set_exception_handler([](const auto&, auto& res, std::exception_ptr ep) {
            std::string what = "internal error";
            try {
                std::rethrow_exception(ep);
            } catch (const ConnectionError& e) {
                res.status = 503;
                what = e.what();
            } catch (const std::exception& e) {
                res.status = 500;
                what = e.what();
            }
            res.set_content(fmt::format("{} {}\n", res.status, what), "text/plain; charset=utf-8");
        });

        for (const std::string& name : page_names()) {
            http.Get(name == "overview" ? "/" : "/" + name,
                     [this, name](const auto& req, auto& res) { page(name, req, res); });
            http.Get("/api/" + name, [this, name](const auto&, auto& res) {
                res.set_content(dump(page_data(views, name), 2), "application/json");
            });
            http.Get("/api/page/" + name, [this, name](const auto&, auto& res) {
                res.set_content(dump(page_model(name, page_data(views, name))), "application/json");
            });
        }
        http.Get("/metrics", [this](const auto&, auto& res) {
            res.set_content(render_metrics(views), "text/plain; version=0.0.4; charset=utf-8");
        });
        http.Get("/assets/app.js", [](const auto&, auto& res) {
            res.set_content(assets::app_js.data(), assets::app_js.size(), "text/javascript; charset=utf-8");
        });
        http.Get("/assets/app.css", [](const auto&, auto& res) {
            res.set_content(assets::app_css.data(), assets::app_css.size(), "text/css; charset=utf-8");
        });
        http.Get("/login", [this](const auto&, auto& res) {
            if (options.auth_token.empty()) return res.set_redirect("/", 303);
            res.set_content(render_login(""), "text/html; charset=utf-8");
        });
        http.Post("/login", [this](const auto& req, auto& res) {
            httplib::Params form;
            httplib::detail::parse_query_text(req.body, form);
            auto it = form.find("token");
            if (options.auth_token.empty() || it == form.end() ||
                !equal_constant_time(it->second, options.auth_token)) {
                res.status = 403;
                res.set_content(render_login("Wrong token."), "text/html; charset=utf-8");
                return;
            }
            res.set_header("Set-Cookie", cookie(options.auth_token));
            res.set_redirect("/", 303);
        });

        const QueueManager& qm = views.queue_manager();
        // A failed entry is named by its exact text, so the action applies to
        // that entry even if the list changed since the page was shown.
        auto failed_action = [this, &qm](bool retry) {
            return [this, &qm, retry](const httplib::Request& req, httplib::Response& res) {
                httplib::Params form;
                if (!post_allowed(req, form, res)) return;
                auto it = form.find("entry");
                if (it == form.end()) return forbid(res, "no entry given");
                for (const FailedJob& f : qm.failed_jobs()) {
                    if (f.entry != it->second) continue;
                    if (retry)
                        qm.retry_failed(f);
                    else
                        qm.remove_failed(f);
                    return done(res, "/failed");
                }
                res.status = 404;
                res.set_content("404 that failed job is no longer in the failed list\n",
                                "text/plain; charset=utf-8");
            };
        };
        http.Post("/failed/retry", failed_action(true));
        http.Post("/failed/remove", failed_action(false));
        http.Post("/failed/retry-all", [this, &qm](const auto& req, auto& res) {
            httplib::Params form;
            if (!post_allowed(req, form, res)) return;
            qm.retry_all_failed();
            done(res, "/failed");
        });
        http.Post("/failed/clear", [this, &qm](const auto& req, auto& res) {
            httplib::Params form;
            if (!post_allowed(req, form, res)) return;
            qm.clear_failed();
            done(res, "/failed");
        });
        http.Post("/scheduled/cancel", [this, &qm](const auto& req, auto& res) {
            httplib::Params form;
            if (!post_allowed(req, form, res)) return;
            auto it = form.find("job_id");
            if (it == form.end() || !qm.cancel_scheduled(it->second)) {
                res.status = 404;
                res.set_content("404 no such scheduled job\n", "text/plain; charset=utf-8");
                return;
            }
            done(res, "/scheduled");
        });
    }
};

}  // namespace

bool is_loopback(const std::string& host) {
    std::string h = lower(host);
    return h == "localhost" || h == "::1" || h.starts_with("127.");
}

int serve(const Views& views, const WebOptions& options) {
    // SIGINT/SIGTERM are taken by a thread (sigwait), which stops the server:
    // block them before httplib starts its threads so they inherit the mask.
    sigset_t stop_signals;
    sigemptyset(&stop_signals);
    sigaddset(&stop_signals, SIGINT);
    sigaddset(&stop_signals, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr);

    Server server{views, options};
    server.routes();
    server.http.set_payload_max_length(64u << 20);
    // SO_REUSEADDR only: httplib's default also sets SO_REUSEPORT, which would
    // let a second server share the port and take half of the requests.
    server.http.set_socket_options([](socket_t sock) {
        int yes = 1;
        ::setsockopt(sock, SOL_SOCKET, SO_REUSEADDR, &yes, sizeof yes);
    });
    if (!server.http.bind_to_port(options.host, options.port)) {
        std::cerr << fmt::format("retools: cannot listen on {}:{}\n", options.host, options.port);
        return 1;
    }
    std::atomic<bool> signalled{false};
    std::thread stopper([&] {
        int sig = 0;
        sigwait(&stop_signals, &sig);
        signalled = true;
        server.http.stop();
    });
    std::string shown = options.host.find(':') != std::string::npos ? "[" + options.host + "]" : options.host;
    std::cerr << fmt::format("retools web: serving http://{}:{}/ for Redis {}{}\n", shown, options.port,
                             views.server(), options.auth_token.empty() ? "" : " (access token required)")
              << std::flush;
    bool ok = server.http.listen_after_bind();
    // Wake the stopper when listening ended for another reason.
    if (!signalled) pthread_kill(stopper.native_handle(), SIGTERM);
    stopper.join();
    return ok ? 0 : 1;
}

}  // namespace retools::tools
