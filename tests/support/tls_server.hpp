#pragma once
// A private TLS redis-server for tests and benchmarks, with certificates made
// at run time by the `openssl` command in a temporary directory.

#include <sys/types.h>

#include <string>
#include <vector>

#include <retools/connection.hpp>

namespace retools::test {

/// The certificates of one test run (EC P-256 keys, PEM files). Made on
/// construction, removed on destruction.
struct TestCertificates {
    TestCertificates();
    ~TestCertificates();
    TestCertificates(const TestCertificates&) = delete;
    TestCertificates& operator=(const TestCertificates&) = delete;

    std::string dir;
    std::string ca_cert, ca_key;            // the CA every certificate below but `other_*` comes from
    std::string server_cert, server_key;    // for localhost, 127.0.0.1 and ::1
    std::string client_cert, client_key;    // a client certificate (mutual TLS)
    std::string expired_cert, expired_key;  // a server certificate valid only in 2020
    std::string other_ca_cert;              // another CA (trusting it is the "wrong CA")
    std::string other_client_cert, other_client_key;  // a client certificate from the other CA
};

/// The certificates shared by every test of this process (made on first use).
const TestCertificates& test_certificates();

struct TlsServerOptions {
    /// `--tls-auth-clients yes`: clients must present a certificate from the CA.
    bool auth_clients = false;
    /// Present the expired certificate instead of the valid one.
    bool expired_certificate = false;
    /// Extra `--name value` arguments.
    std::vector<std::string> args;
};

/// `redis-server --port 0 --tls-port <free>` on 127.0.0.1. Starts on
/// construction, stops (SIGTERM, then SIGKILL) on destruction.
class TlsServer {
public:
    explicit TlsServer(TlsServerOptions options = {}, const TestCertificates& certs = test_certificates());
    ~TlsServer();
    TlsServer(const TlsServer&) = delete;
    TlsServer& operator=(const TlsServer&) = delete;

    int port() const noexcept { return port_; }
    pid_t pid() const noexcept { return pid_; }
    const TestCertificates& certificates() const noexcept { return certs_; }

    /// Trusts the test CA; presents the client certificate when the server asks for one.
    TlsOptions tls_options() const;
    /// 127.0.0.1, this port, tls_options().
    ConnectionOptions options() const;
    /// `rediss://127.0.0.1:<port>/0?ca_file=...` (with cert_file/key_file when auth_clients).
    std::string url() const;

    void stop();
    void kill();
    /// Starts again on the same port.
    void start();

private:
    void launch();

    TlsServerOptions options_;
    const TestCertificates& certs_;
    int port_ = 0;
    pid_t pid_ = -1;
    std::string dir_;
};

}  // namespace retools::test
