#include "tls_server.hpp"

#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <stdexcept>
#include <thread>

#include <fmt/format.h>

#include <retools/errors.hpp>

#include "process.hpp"
#include "redis_server.hpp"

namespace retools::test {
namespace {

void run(const std::string& command, const std::string& dir) {
    std::string line = fmt::format("cd '{}' && {} >>openssl.log 2>&1", dir, command);
    if (std::system(line.c_str()) != 0)
        throw std::runtime_error(fmt::format("openssl failed: {} (see {}/openssl.log)", command, dir));
}

// An `openssl ca` set-up: the only way openssl 3.0 signs with a validity window in the past.
const char* kCaConfig = R"(
[ ca ]
default_ca = test_ca
[ test_ca ]
dir = .
database = index.txt
new_certs_dir = issued
serial = serial
default_md = sha256
policy = policy_any
unique_subject = no
copy_extensions = none
[ policy_any ]
commonName = supplied
[ server_ext ]
basicConstraints = CA:FALSE
keyUsage = digitalSignature, keyEncipherment
extendedKeyUsage = serverAuth
subjectAltName = DNS:localhost, IP:127.0.0.1, IP:::1
[ client_ext ]
basicConstraints = CA:FALSE
keyUsage = digitalSignature
extendedKeyUsage = clientAuth
)";

constexpr const char* kKey = "-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes";

void make_ca(const std::string& dir, const std::string& name, const std::string& cn) {
    run(fmt::format("openssl req -x509 {} -keyout {}.key -out {}.crt -days 3650 -subj /CN={} "
                    "-addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign",
                    kKey, name, name, cn),
        dir);
}

void make_leaf(const std::string& dir, const std::string& ca, const std::string& name, const std::string& cn,
               const std::string& extensions, const std::string& validity) {
    run(fmt::format("openssl req -new {} -keyout {}.key -out {}.csr -subj /CN={}", kKey, name, name, cn),
        dir);
    run(fmt::format("openssl ca -batch -notext -config ca.cnf -cert {}.crt -keyfile {}.key -in {}.csr "
                    "-out {}.crt -extensions {} {}",
                    ca, ca, name, name, extensions, validity),
        dir);
}

}  // namespace

TestCertificates::TestCertificates() {
    char tmpl[] = "/tmp/retools-certs-XXXXXX";
    if (!::mkdtemp(tmpl)) throw std::runtime_error("mkdtemp failed");
    dir = tmpl;
    std::filesystem::create_directory(dir + "/issued");
    std::ofstream(dir + "/ca.cnf") << kCaConfig;
    std::ofstream(dir + "/index.txt");
    std::ofstream(dir + "/serial") << "1000\n";
    make_ca(dir, "ca", "retools-test-ca");
    make_ca(dir, "other-ca", "retools-other-ca");
    make_leaf(dir, "ca", "server", "localhost", "server_ext", "-days 365");
    make_leaf(dir, "ca", "client", "retools-test-client", "client_ext", "-days 365");
    make_leaf(dir, "ca", "expired", "localhost", "server_ext",
              "-startdate 20200101000000Z -enddate 20200201000000Z");
    make_leaf(dir, "other-ca", "other-client", "retools-other-client", "client_ext", "-days 365");
    auto file = [&](const char* name) { return dir + "/" + name; };
    ca_cert = file("ca.crt");
    ca_key = file("ca.key");
    server_cert = file("server.crt");
    server_key = file("server.key");
    client_cert = file("client.crt");
    client_key = file("client.key");
    expired_cert = file("expired.crt");
    expired_key = file("expired.key");
    other_ca_cert = file("other-ca.crt");
    other_client_cert = file("other-client.crt");
    other_client_key = file("other-client.key");
}

TestCertificates::~TestCertificates() {
    std::error_code ec;
    std::filesystem::remove_all(dir, ec);
}

const TestCertificates& test_certificates() {
    static TestCertificates certs;
    return certs;
}

TlsServer::TlsServer(TlsServerOptions options, const TestCertificates& certs)
    : options_(std::move(options)), certs_(certs) {
    char tmpl[] = "/tmp/retools-tls-redis-XXXXXX";
    if (!::mkdtemp(tmpl)) throw std::runtime_error("mkdtemp failed");
    dir_ = tmpl;
    for (int attempt = 0;; ++attempt) {
        port_ = free_port();
        try {
            launch();
            return;
        } catch (const std::exception&) {
            if (attempt >= 5) throw;  // a random port may have been taken meanwhile
        }
    }
}

TlsServer::~TlsServer() {
    try {
        stop();
    } catch (...) {}
    std::error_code ec;
    std::filesystem::remove_all(dir_, ec);
}

TlsOptions TlsServer::tls_options() const {
    TlsOptions tls{.ca_file = certs_.ca_cert};
    if (options_.auth_clients) {
        tls.cert_file = certs_.client_cert;
        tls.key_file = certs_.client_key;
    }
    return tls;
}

ConnectionOptions TlsServer::options() const {
    return ConnectionOptions{.host = "127.0.0.1", .port = port_, .tls = tls_options()};
}

std::string TlsServer::url() const {
    std::string url = fmt::format("rediss://127.0.0.1:{}/0?ca_file={}", port_, certs_.ca_cert);
    if (options_.auth_clients)
        url += fmt::format("&cert_file={}&key_file={}", certs_.client_cert, certs_.client_key);
    return url;
}

void TlsServer::launch() {
    const bool expired = options_.expired_certificate;
    std::vector<std::string> args{"redis-server",
                                  "--port",
                                  "0",
                                  "--tls-port",
                                  std::to_string(port_),
                                  "--bind",
                                  "127.0.0.1",
                                  "--tls-cert-file",
                                  expired ? certs_.expired_cert : certs_.server_cert,
                                  "--tls-key-file",
                                  expired ? certs_.expired_key : certs_.server_key,
                                  "--tls-ca-cert-file",
                                  certs_.ca_cert,
                                  "--tls-auth-clients",
                                  options_.auth_clients ? "yes" : "no",
                                  "--save",
                                  "",
                                  "--appendonly",
                                  "no",
                                  "--daemonize",
                                  "no",
                                  "--dir",
                                  dir_,
                                  "--logfile",
                                  dir_ + "/redis.log",
                                  "--enable-debug-command",
                                  "local"};
    args.insert(args.end(), options_.args.begin(), options_.args.end());
    std::vector<char*> argv;
    for (auto& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);

    pid_t pid = fork_tied_to_parent();
    if (pid == 0) {
        int devnull = ::open("/dev/null", O_RDWR);
        ::dup2(devnull, 0);
        ::dup2(devnull, 1);
        ::execvp("redis-server", argv.data());
        ::_exit(127);
    }
    pid_ = pid;
    // Ready when a TLS PING answers (verification off: the certificate may be the expired one).
    TlsOptions probe_tls{.cert_file = certs_.client_cert, .key_file = certs_.client_key, .verify = false};
    Connection probe{ConnectionOptions{.host = "127.0.0.1",
                                       .port = port_,
                                       .connect_timeout = std::chrono::milliseconds(200),
                                       .command_timeout = std::chrono::milliseconds(500),
                                       .pool_size = 1,
                                       .tls = probe_tls}};
    auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
    while (std::chrono::steady_clock::now() < deadline) {
        if (::waitpid(pid_, nullptr, WNOHANG) == pid_) {
            pid_ = -1;
            throw std::runtime_error(fmt::format(
                "TLS redis-server exited at start-up on port {} (see {}/redis.log; built with TLS?)", port_,
                dir_));
        }
        try {
            probe.command("PING");
            return;
        } catch (const ReplyError&) {
            return;  // NOAUTH still means it is up
        } catch (const Error&) {}
        std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    kill();
    throw std::runtime_error(fmt::format("TLS redis-server did not answer PING on port {}", port_));
}

void TlsServer::kill() {
    if (pid_ <= 0) return;
    ::kill(pid_, SIGKILL);
    ::waitpid(pid_, nullptr, 0);
    pid_ = -1;
}

void TlsServer::stop() {
    if (pid_ <= 0) return;
    ::kill(pid_, SIGTERM);
    for (int i = 0; i < 300; ++i) {
        if (::waitpid(pid_, nullptr, WNOHANG) == pid_) {
            pid_ = -1;
            return;
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    kill();
}

void TlsServer::start() {
    if (pid_ > 0) return;
    for (int attempt = 0;; ++attempt) {
        try {
            launch();
            return;
        } catch (const std::exception&) {
            if (attempt >= 20) throw;
            std::this_thread::sleep_for(std::chrono::milliseconds(100));
        }
    }
}

}  // namespace retools::test
