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

class Error : public std::runtime_error {
public:
    using std::runtime_error::runtime_error;
};

class ConnectionError : public Error {
public:
    using Error::Error;
};

class TimeoutError : public ConnectionError {
public:
    using ConnectionError::ConnectionError;
};

class AuthenticationError : public ConnectionError {
public:
    using ConnectionError::ConnectionError;
};

class ReplyError : public Error {
public:
    using Error::Error;
};

class ConfigurationError : public Error {
public:
    using Error::Error;
};

class CacheConfigurationError : public ConfigurationError {
public:
    using ConfigurationError::ConfigurationError;
};

class QueueError : public Error {
public:
    using Error::Error;
};

class LockTimeout : public Error {
public:
    using Error::Error;
};

/// Thrown by Lock::extend() when the lock is no longer this holder's: it
/// expired (and another owner may have taken it). The critical section was
/// not protected for its whole duration.
class LockLost : public Error {
public:
    using Error::Error;
};

class AbortJob : public Error {
public:
    AbortJob() : Error("job aborted") {}
    using Error::Error;
};

}  // namespace retools
