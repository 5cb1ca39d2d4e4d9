#pragma once
// The library's own access to Connection and Pipeline internals: the pool
// behind a Connection (cluster routing leases its links) and the encoded
// commands of a Pipeline. The public classes only name this struct as a
// friend; everything it offers is defined here, in src/. Not installed.

#include <retools/connection.hpp>

namespace retools::detail {

struct ConnectionAccess {
    /// The pool and transport (complete in client/connection_impl.hpp).
    using Impl = Connection::Impl;

    static Impl& impl(const Connection& conn) noexcept { return *conn.impl_; }
    /// The pipeline's commands, encoded in RESP.
    static const CommandBuffer& buffer(const Pipeline& pipeline) noexcept { return pipeline.buffer_; }
    static CommandBuffer& buffer(Pipeline& pipeline) noexcept { return pipeline.buffer_; }
};

}  // namespace retools::detail
