#include "client/tls.hpp"

#include <arpa/inet.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>

#include <cerrno>
#include <climits>
#include <cstdint>
#include <cstring>

#include <fmt/format.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include <retools/errors.hpp>

#include "client/errors.hpp"

namespace retools::detail {
namespace {

// ---- a socket BIO that never raises SIGPIPE --------------------------------

int socket_of(BIO* bio) {
    return static_cast<int>(reinterpret_cast<std::intptr_t>(BIO_get_data(bio)));
}

int bio_write(BIO* bio, const char* data, int size) {
    BIO_clear_retry_flags(bio);
    ssize_t n = ::send(socket_of(bio), data, static_cast<std::size_t>(size), MSG_NOSIGNAL);
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) BIO_set_retry_write(bio);
    return static_cast<int>(n);
}

int bio_read(BIO* bio, char* out, int size) {
    BIO_clear_retry_flags(bio);
    ssize_t n = ::recv(socket_of(bio), out, static_cast<std::size_t>(size), 0);
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) BIO_set_retry_read(bio);
    return static_cast<int>(n);
}

long bio_ctrl(BIO*, int command, long, void*) {
    return command == BIO_CTRL_FLUSH ? 1 : 0;  // writes are unbuffered; nothing else applies
}

BIO_METHOD* socket_method() {
    static BIO_METHOD* method = [] {
        BIO_METHOD* m = BIO_meth_new(BIO_get_new_index() | BIO_TYPE_SOURCE_SINK, "retools socket");
        if (m == nullptr) return m;
        BIO_meth_set_write(m, bio_write);
        BIO_meth_set_read(m, bio_read);
        BIO_meth_set_ctrl(m, bio_ctrl);
        return m;
    }();
    return method;
}

// ---- messages --------------------------------------------------------------

std::string openssl_errors() {
    std::string out;
    while (unsigned long e = ERR_get_error()) {
        char buf[256];
        ERR_error_string_n(e, buf, sizeof buf);
        if (!out.empty()) out += "; ";
        out += buf;
    }
    return out.empty() ? std::string("unknown OpenSSL error") : out;
}

[[noreturn]] void bad_file(std::string_view option, const std::string& file, std::string_view what) {
    std::string why = openssl_errors();
    throw ConfigurationError(fmt::format("TlsOptions.{} {:?}: {} ({})", option, file, what, why));
}

bool is_ip_address(const std::string& host) {
    unsigned char buf[sizeof(in6_addr)];
    return inet_pton(AF_INET, host.c_str(), buf) == 1 || inet_pton(AF_INET6, host.c_str(), buf) == 1;
}

// Why the server's certificate was refused, with the remedy.
std::string verify_failure(long result, const std::string& name) {
    std::string reason = X509_verify_cert_error_string(result);
    switch (result) {
        case X509_V_ERR_CERT_HAS_EXPIRED:
            return fmt::format("the server's certificate has expired ({})", reason);
        case X509_V_ERR_CERT_NOT_YET_VALID:
            return fmt::format("the server's certificate is not valid yet ({})", reason);
        case X509_V_ERR_HOSTNAME_MISMATCH:
        case X509_V_ERR_IP_ADDRESS_MISMATCH:
            return fmt::format(
                "the server's certificate is not for {:?}: wrong server name (connect by the name it "
                "is for, or set TlsOptions.server_name) ({})",
                name, reason);
        case X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY:
        case X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT:
        case X509_V_ERR_SELF_SIGNED_CERT_IN_CHAIN:
        case X509_V_ERR_DEPTH_ZERO_SELF_SIGNED_CERT:
        case X509_V_ERR_UNABLE_TO_VERIFY_LEAF_SIGNATURE:
        case X509_V_ERR_CERT_SIGNATURE_FAILURE:
            return fmt::format(
                "the server's certificate is not signed by a trusted CA: wrong CA (check "
                "TlsOptions.ca_file / ca_path) ({})",
                reason);
        default:
            return fmt::format("the server's certificate was refused ({})", reason);
    }
}

// What an OpenSSL error reason means for a Redis client.
std::string explain(unsigned long error) {
    if (ERR_GET_LIB(error) != ERR_LIB_SSL) return {};
    switch (ERR_GET_REASON(error)) {
        case SSL_R_WRONG_VERSION_NUMBER:
        case SSL_R_PACKET_LENGTH_TOO_LONG:
        case SSL_R_UNKNOWN_PROTOCOL:
        case SSL_R_HTTP_REQUEST:
            return "the server does not speak TLS on this port: a plain-text server (use redis://, not "
                   "rediss://)";
        case SSL_R_TLSV13_ALERT_CERTIFICATE_REQUIRED:
            return "the server requires a client certificate (set TlsOptions.cert_file and key_file)";
        case SSL_R_SSLV3_ALERT_BAD_CERTIFICATE:
        case SSL_R_TLSV1_ALERT_UNKNOWN_CA:
        case SSL_R_SSLV3_ALERT_CERTIFICATE_UNKNOWN:
        case SSL_R_SSLV3_ALERT_HANDSHAKE_FAILURE:
        case SSL_R_TLSV1_ALERT_DECRYPT_ERROR:
            return "the server refused this client's certificate, or requires one (check "
                   "TlsOptions.cert_file and key_file)";
        case SSL_R_UNEXPECTED_EOF_WHILE_READING:
            return "the server closed the connection";
        default:
            return {};
    }
}

}  // namespace

// ---- TlsContext ------------------------------------------------------------

TlsContext::TlsContext(const TlsOptions& options) : options_(options) {
    ERR_clear_error();
    ctx_ = SSL_CTX_new(TLS_client_method());
    if (ctx_ == nullptr)
        throw ConfigurationError("TLS: cannot create an OpenSSL context: " + openssl_errors());
    try {
        SSL_CTX_set_min_proto_version(ctx_, TLS1_2_VERSION);
        // A peer that vanishes without close_notify is an ordinary hang-up here.
        SSL_CTX_set_options(ctx_, SSL_OP_IGNORE_UNEXPECTED_EOF);
        // Read whole socket buffers, not a record header then its body: one recv per reply.
        SSL_CTX_set_read_ahead(ctx_, 1);
        SSL_CTX_set_verify(ctx_, options.verify ? SSL_VERIFY_PEER : SSL_VERIFY_NONE, nullptr);
        if (!options.ca_file.empty() &&
            SSL_CTX_load_verify_locations(ctx_, options.ca_file.c_str(), nullptr) != 1)
            bad_file("ca_file", options.ca_file, "cannot load CA certificates");
        if (!options.ca_path.empty()) {
            struct stat st {};
            if (::stat(options.ca_path.c_str(), &st) != 0 || !S_ISDIR(st.st_mode))
                throw ConfigurationError(
                    fmt::format("TlsOptions.ca_path {:?} is not a directory", options.ca_path));
            if (SSL_CTX_load_verify_locations(ctx_, nullptr, options.ca_path.c_str()) != 1)
                bad_file("ca_path", options.ca_path, "cannot use as a CA directory");
        }
        if (options.ca_file.empty() && options.ca_path.empty() && SSL_CTX_set_default_verify_paths(ctx_) != 1)
            throw ConfigurationError("TLS: cannot load the system's CA certificates: " + openssl_errors());
        if (options.cert_file.empty() != options.key_file.empty())
            throw ConfigurationError("TlsOptions.cert_file and key_file must be given together");
        if (!options.cert_file.empty()) {
            if (SSL_CTX_use_certificate_chain_file(ctx_, options.cert_file.c_str()) != 1)
                bad_file("cert_file", options.cert_file, "cannot load the client certificate");
            if (SSL_CTX_use_PrivateKey_file(ctx_, options.key_file.c_str(), SSL_FILETYPE_PEM) != 1)
                bad_file("key_file", options.key_file, "cannot load the private key");
            if (SSL_CTX_check_private_key(ctx_) != 1)
                bad_file("key_file", options.key_file, "does not match cert_file");
        }
    } catch (...) {
        SSL_CTX_free(ctx_);
        throw;
    }
}

TlsContext::~TlsContext() {
    SSL_CTX_free(ctx_);
}

// ---- TlsSession ------------------------------------------------------------

TlsSession::TlsSession(const TlsContext& context, int fd, const std::string& host, const std::string& server,
                       Deadline deadline, long long timeout_ms)
    : server_(server) {
    ERR_clear_error();
    ssl_ = SSL_new(context.get());
    BIO* bio = socket_method() ? BIO_new(socket_method()) : nullptr;
    if (ssl_ == nullptr || bio == nullptr) {
        if (bio) BIO_free(bio);
        SSL_free(ssl_);
        throw_connection_error(server_, "starting TLS", openssl_errors());
    }
    BIO_set_data(bio, reinterpret_cast<void*>(static_cast<std::intptr_t>(fd)));
    BIO_set_init(bio, 1);
    SSL_set_bio(ssl_, bio, bio);  // the session owns the BIO, not the socket

    try {
        const TlsOptions& options = context.options();
        const std::string& name = options.server_name.empty() ? host : options.server_name;
        const bool ip = is_ip_address(name);
        if (!ip && SSL_set_tlsext_host_name(ssl_, name.c_str()) != 1)
            throw_connection_error(server_, "starting TLS", fmt::format("bad server name {:?}", name));
        if (options.verify) {
            X509_VERIFY_PARAM* param = SSL_get0_param(ssl_);
            int ok = 0;
            if (ip) {
                ok = X509_VERIFY_PARAM_set1_ip_asc(param, name.c_str());
            } else {
                X509_VERIFY_PARAM_set_hostflags(param, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
                ok = X509_VERIFY_PARAM_set1_host(param, name.c_str(), name.size());
            }
            if (ok != 1)
                throw_connection_error(server_, "starting TLS", fmt::format("bad server name {:?}", name));
        }
        for (;;) {
            ERR_clear_error();
            errno = 0;
            int result = SSL_connect(ssl_);
            if (result == 1) return;
            int error = SSL_get_error(ssl_, result);
            if (error == SSL_ERROR_WANT_READ || error == SSL_ERROR_WANT_WRITE) {
                if (!wait_for(fd, error == SSL_ERROR_WANT_READ ? POLLIN : POLLOUT, deadline))
                    throw_timeout_error(
                        server_, "negotiating TLS", timeout_ms,
                        "no TLS answer; is it a plain-text server? (use redis://, not rediss://)");
                continue;
            }
            long verified = SSL_get_verify_result(ssl_);
            if (options.verify && verified != X509_V_OK)
                throw_connection_error(server_, "negotiating TLS",
                                       "certificate verification failed: " + verify_failure(verified, name));
            unsigned long last = ERR_peek_last_error();
            std::string why = explain(last);
            std::string detail = last ? openssl_errors() : std::string();
            if (why.empty() && (error == SSL_ERROR_SYSCALL || error == SSL_ERROR_ZERO_RETURN) && errno == 0)
                why =
                    "the server closed the connection during the TLS handshake (a plain-text server, or one "
                    "that refused this client)";
            if (why.empty() && error == SSL_ERROR_SYSCALL && errno != 0) why = std::strerror(errno);
            if (why.empty()) why = "TLS error";
            if (!detail.empty()) why += fmt::format(" ({})", detail);
            throw_connection_error(server_, "negotiating TLS", why);
        }
    } catch (...) {
        SSL_free(ssl_);
        throw;
    }
}

TlsSession::~TlsSession() {
    SSL_free(ssl_);  // no close_notify: the peer sees the socket close, as with plain TCP
}

void TlsSession::fail(int result, std::string_view during) {
    int error = SSL_get_error(ssl_, result);
    int saved = errno;
    if (error == SSL_ERROR_SYSCALL && (saved == EPIPE || saved == ECONNRESET) && !reading_alert_) {
        // A server that refuses the client after the handshake sends an alert,
        // then closes: the alert says why, so read it before giving up.
        reading_alert_ = true;
        char byte;
        ERR_clear_error();
        int n = SSL_read(ssl_, &byte, 1);
        if (n <= 0 && SSL_get_error(ssl_, n) == SSL_ERROR_SSL) fail(n, during);
        reading_alert_ = false;
    }
    const char* closed = answered_
                             ? "the server closed the connection"
                             : "the server closed the TLS connection before answering (does it require a "
                               "client certificate? set TlsOptions.cert_file and key_file)";
    if (error == SSL_ERROR_ZERO_RETURN) throw_connection_error(server_, during, closed);
    if (error == SSL_ERROR_SYSCALL) {
        ERR_clear_error();
        if (saved == 0 || saved == EPIPE || saved == ECONNRESET)
            throw_connection_error(server_, during, closed);
        throw_system_error(server_, during, saved);
    }
    std::string why = explain(ERR_peek_last_error());
    std::string detail = openssl_errors();
    throw_connection_error(server_, during,
                           why.empty() ? "TLS error: " + detail : fmt::format("{} ({})", why, detail));
}

std::size_t TlsSession::read(char* buffer, std::size_t capacity, Want& want) {
    ERR_clear_error();
    errno = 0;
    int n = SSL_read(ssl_, buffer, static_cast<int>(std::min<std::size_t>(capacity, INT_MAX)));
    if (n > 0) {
        want = Want::nothing;
        answered_ = true;
        return static_cast<std::size_t>(n);
    }
    int error = SSL_get_error(ssl_, n);
    if (error == SSL_ERROR_WANT_READ || error == SSL_ERROR_WANT_WRITE) {
        want = error == SSL_ERROR_WANT_READ ? Want::read : Want::write;
        return 0;
    }
    fail(n, "reading a reply");
}

std::size_t TlsSession::write(std::string_view data, Want& want) {
    ERR_clear_error();
    errno = 0;
    int n = SSL_write(ssl_, data.data(), static_cast<int>(std::min<std::size_t>(data.size(), INT_MAX)));
    if (n > 0) {
        want = Want::nothing;
        return static_cast<std::size_t>(n);
    }
    int error = SSL_get_error(ssl_, n);
    if (error == SSL_ERROR_WANT_READ || error == SSL_ERROR_WANT_WRITE) {
        want = error == SSL_ERROR_WANT_READ ? Want::read : Want::write;
        return 0;
    }
    fail(n, "sending a command");
}

bool TlsSession::pending() const {
    return SSL_has_pending(ssl_) == 1;
}

bool TlsSession::idle_and_open() {
    if (SSL_has_pending(ssl_) != 1) {
        pollfd p{socket_of(SSL_get_rbio(ssl_)), POLLIN, 0};
        int ready = ::poll(&p, 1, 0);
        if (ready == 0) return true;
        if (ready < 0) return errno == EINTR;
    }
    // Bytes buffered or readable: a post-handshake message (a TLS 1.3 session
    // ticket) is fine; application data, a close_notify or an error are not.
    ERR_clear_error();
    char byte;
    int n = SSL_read(ssl_, &byte, 1);
    if (n > 0) return false;
    int error = SSL_get_error(ssl_, n);
    ERR_clear_error();
    return error == SSL_ERROR_WANT_READ || error == SSL_ERROR_WANT_WRITE;
}

}  // namespace retools::detail
