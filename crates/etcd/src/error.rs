//! The one error type of the crate, with whether retrying could help. Created and read on the
//! `lb-store` thread; cloned into watch events and the shared status.

use std::time::Duration;

/// gRPC status codes etcd answers with (the gateway forwards them as `code`).
pub mod grpc_code {
    /// The client gave up waiting (also etcd's own request timeouts).
    pub const DEADLINE_EXCEEDED: i32 = 4;
    /// The user lacks permission on the key.
    pub const PERMISSION_DENIED: i32 = 7;
    /// Too many requests or too large.
    pub const RESOURCE_EXHAUSTED: i32 = 8;
    /// Rejected by a precondition (e.g. auth not enabled).
    pub const FAILED_PRECONDITION: i32 = 9;
    /// Aborted, retry at a higher level.
    pub const ABORTED: i32 = 10;
    /// The revision asked for is compacted away (or in the future).
    pub const OUT_OF_RANGE: i32 = 11;
    /// No leader, leader changed, request timed out inside etcd.
    pub const UNAVAILABLE: i32 = 14;
    /// The auth token is missing, invalid or expired.
    pub const UNAUTHENTICATED: i32 = 16;
}

/// Why a call failed. Cheap to clone (messages are strings), so it travels in watch events.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The configuration cannot work (bad endpoint, unreadable TLS file, no tokio runtime).
    #[error("etcd configuration: {0}")]
    Config(String),
    /// TCP connect or TLS handshake to an endpoint failed.
    #[error("cannot connect to etcd at {endpoint}: {reason}")]
    Connect {
        /// The endpoint URL.
        endpoint: String,
        /// What failed.
        reason: String,
    },
    /// TLS with etcd failed on certificates or protocol (wrong CA, missing or refused client
    /// certificate, name mismatch): a configuration problem, not a network one.
    #[error("TLS with etcd at {endpoint} failed: {reason}")]
    Tls {
        /// The endpoint URL.
        endpoint: String,
        /// rustls' reason.
        reason: String,
    },
    /// The connection failed while a request was in flight.
    #[error("etcd connection to {endpoint} failed: {reason}")]
    Transport {
        /// The endpoint URL.
        endpoint: String,
        /// What failed.
        reason: String,
    },
    /// A call did not complete in time.
    #[error("etcd {op} timed out after {after:?}")]
    Timeout {
        /// The operation (`get`, `put_if`, `watch`, ...).
        op: &'static str,
        /// The bound that elapsed.
        after: Duration,
    },
    /// etcd answered with an error status.
    #[error("etcd refused {op}: {message} (gRPC code {code})")]
    Etcd {
        /// The operation.
        op: &'static str,
        /// gRPC status code ([`grpc_code`]).
        code: i32,
        /// etcd's message.
        message: String,
    },
    /// The user name or password was refused.
    #[error("etcd authentication failed: {0}")]
    Auth(String),
    /// A response or value exceeded a configured limit.
    #[error("{what} is larger than the {limit}-byte limit")]
    TooLarge {
        /// What was too large.
        what: &'static str,
        /// The limit in bytes.
        limit: usize,
    },
    /// etcd's answer could not be understood.
    #[error("unexpected answer from etcd to {op}: {reason}")]
    Protocol {
        /// The operation.
        op: &'static str,
        /// What was wrong.
        reason: String,
    },
    /// A watch did not deliver a change that a read showed, within one probe interval.
    #[error("the watch is {behind} revision(s) behind the key after {after:?}")]
    WatchStalled {
        /// Key revision seen by the read minus the revision the watch waits for, plus one.
        behind: i64,
        /// How long it was behind.
        after: Duration,
    },
}

impl Error {
    /// Whether the same call could succeed later without any change of configuration
    /// (network, leader election, restarts, overload), as opposed to a refusal that repeats.
    pub fn is_retryable(&self) -> bool {
        match self {
            Error::Connect { .. }
            | Error::Transport { .. }
            | Error::Timeout { .. }
            | Error::WatchStalled { .. } => true,
            Error::Etcd { code, .. } => matches!(
                *code,
                grpc_code::DEADLINE_EXCEEDED
                    | grpc_code::RESOURCE_EXHAUSTED
                    | grpc_code::ABORTED
                    | grpc_code::UNAVAILABLE
                    | grpc_code::UNAUTHENTICATED
            ),
            Error::Config(_)
            | Error::Tls { .. }
            | Error::Auth(_)
            | Error::TooLarge { .. }
            | Error::Protocol { .. } => false,
        }
    }

    /// Whether etcd refused the auth token (expired, invalidated, missing): a fresh token fixes
    /// it. Matched on etcd's messages, which are stable across 3.4 to 3.6.
    pub(crate) fn is_token_rejected(&self) -> bool {
        match self {
            Error::Etcd { code, message, .. } => {
                *code == grpc_code::UNAUTHENTICATED
                    || message.contains("invalid auth token")
                    || message.contains("user name is empty")
                    || message.contains("revision of auth store is old")
            }
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn etcd(code: i32, message: &str) -> Error {
        Error::Etcd { op: "get", code, message: message.into() }
    }

    #[test]
    fn retryable_or_not() {
        assert!(etcd(grpc_code::UNAVAILABLE, "etcdserver: no leader").is_retryable());
        assert!(etcd(grpc_code::UNAUTHENTICATED, "etcdserver: invalid auth token").is_retryable());
        assert!(
            !etcd(grpc_code::PERMISSION_DENIED, "etcdserver: permission denied").is_retryable()
        );
        assert!(!Error::Auth("bad password".into()).is_retryable());
        assert!(!Error::TooLarge { what: "value", limit: 1 }.is_retryable());
        assert!(Error::Timeout { op: "get", after: Duration::from_secs(1) }.is_retryable());
    }

    #[test]
    fn token_rejections() {
        // The three ways etcd 3.4 says "get a new token" (the last one under --auth-token jwt).
        assert!(etcd(16, "etcdserver: invalid auth token").is_token_rejected());
        assert!(etcd(3, "etcdserver: user name is empty").is_token_rejected());
        assert!(etcd(3, "etcdserver: revision of auth store is old").is_token_rejected());
        assert!(!etcd(7, "etcdserver: permission denied").is_token_rejected());
        assert!(!Error::Auth("x".into()).is_token_rejected());
    }
}
