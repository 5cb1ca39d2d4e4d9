#pragma once
// One exception tree, split by how a caller recovers:
//
//   Error (std::runtime_error)
//   ├── ConnectionError        the server is unreachable, timed out or hung up; retry later
//   │   ├── TimeoutError       the connect or command timeout elapsed
//   │   └── AuthenticationError AUTH was refused (wrong password or user)
//   ├── ReplyError             the server answered with an error reply (message is the server's)
//   ├── ConfigurationError     bad options or URL; a programming/config mistake, do not retry
//   │   └── CacheConfigurationError   unknown cache region, bad region settings
//   ├── QueueError             bad job payload, unknown job, invalid kwargs
//   ├── LockTimeout            a Lock could not be acquired within its timeout
//   ├── LockLost               a held Lock expired and may have been taken by another owner
//   └── AbortJob               thrown by a job_prerun handler to skip a job quietly

#include <stdexcept>
#include <string>

namespace retools {

namespace detail {
struct ErrorAccess;
}  // namespace detail

/// The base of every exception retools throws. Catch it to handle any
/// retools failure in one place; `what()` names the thing involved (server,
/// key, command, option, file) and never a password.
class Error : public std::runtime_error {
public:
    using std::runtime_error::runtime_error;
};

/// The server could not be reached or the conversation broke: connection
/// refused, a host name that does not resolve, the server hung up, a protocol
/// error, or a TLS failure (untrusted or expired certificate, wrong server
/// name, a plain-text server on a TLS URL or the reverse; the message says
/// which). The broken connection is dropped; the next call opens a fresh one.
/// Recover by retrying later, but only calls that are safe to run twice:
/// maybe_executed() says whether the failed call may have run.
///
/// ```cpp
/// try { conn.command("INCR", "n"); }
/// catch (const retools::ConnectionError& e) { if (!e.maybe_executed()) { /* safe to send again */ } }
/// ```
class ConnectionError : public Error {
public:
    explicit ConnectionError(const std::string& what, bool maybe_executed = true)
        : Error(what), maybe_executed_(maybe_executed) {}

    /// False when nothing of the call reached the server: the connection
    /// could not be opened, every pooled connection stayed busy, the server
    /// was known to be down (failing fast), or a Cluster kept redirecting it
    /// (a redirection means it did not run). True when the request was
    /// written, or may have been, and its reply did not come: it may have run.
    bool maybe_executed() const noexcept { return maybe_executed_; }

private:
    friend struct detail::ErrorAccess;  // marks an error raised before anything was sent
    bool maybe_executed_;
};

/// ConnectionOptions::connect_timeout or command_timeout elapsed (or every
/// pooled connection stayed busy that long). As for ConnectionError: the
/// command may have run; retry only what is safe to repeat, perhaps with a
/// longer timeout.
class TimeoutError : public ConnectionError {
public:
    using ConnectionError::ConnectionError;
};

/// The server refused AUTH: wrong password or user name, or a disabled ACL
/// user. Retrying does not help; fix the credentials.
class AuthenticationError : public ConnectionError {
public:
    using ConnectionError::ConnectionError;
};

/// The server answered a command with an error reply (WRONGTYPE, an error
/// raised by a script, OOM...), or a reply had another type than the accessor
/// used. The message starts with the command and its key. The connection
/// stays usable; the command is not retried, since running it again would
/// fail the same way.
class ReplyError : public Error {
public:
    using Error::Error;
};

/// Bad options, URL or TLS files (thrown when a Connection or component is
/// made, or when the server refuses SELECT of the configured database). A
/// programming or deployment mistake: do not retry, fix the configuration.
class ConfigurationError : public Error {
public:
    using Error::Error;
};

/// An unknown cache region or bad region settings. Fix the region set-up.
class CacheConfigurationError : public ConfigurationError {
public:
    using ConfigurationError::ConfigurationError;
};

/// A bad job payload, an unknown job name or invalid kwargs. The job is not
/// enqueued (or, in a worker, is moved aside byte-exact); fix the caller.
class QueueError : public Error {
public:
    using Error::Error;
};

/// A Lock could not be acquired within LockOptions::timeout: another holder
/// kept it. Retry later, or give up the work that needed the lock.
class LockTimeout : public Error {
public:
    using Error::Error;
};

/// Thrown by Lock::extend() when the lock is no longer this holder's: it
/// expired (and another owner may have taken it). The critical section was
/// not protected for its whole duration: undo or re-check its effects, then
/// acquire the lock again if the work must go on.
class LockLost : public Error {
public:
    using Error::Error;
};

/// Thrown by a job_prerun handler (or a job) to skip the job quietly: it is
/// counted as aborted, not failed. Not an error to recover from.
class AbortJob : public Error {
public:
    AbortJob() : Error("job aborted") {}
    using Error::Error;
};

}  // namespace retools
