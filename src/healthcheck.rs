//! `fulcrum healthcheck`: the container's `HEALTHCHECK` probe, so the runtime image needs no
//! curl. `http://host:port/path` sends one `GET` (HTTP/1.1, `connection: close`) and wants a
//! `2xx` status line; `tcp://host:port` only connects (for the h2c gRPC demo backends). Plain
//! std sockets with one deadline for the whole probe; not used by the data plane.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

/// Why a probe failed. The message is what `fulcrum healthcheck` prints before exiting 1.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    /// The URL is not `http://host:port[/path]` or `tcp://host:port`.
    #[error("bad probe URL `{0}` (expected http://host:port/path or tcp://host:port)")]
    BadUrl(String),
    /// Name resolution, connect, write or read failed, or the deadline passed.
    #[error("{url}: {source}")]
    Io {
        /// The probed URL.
        url: String,
        /// The socket error.
        source: std::io::Error,
    },
    /// The answer was not an HTTP status line with a 2xx code.
    #[error("{url}: unhealthy answer `{status_line}`")]
    Unhealthy {
        /// The probed URL.
        url: String,
        /// The first line of the answer (at most 100 bytes).
        status_line: String,
    },
}

/// Probes `url` within `timeout`. Returns a one-line description of the healthy answer.
pub fn probe(url: &str, timeout: Duration) -> Result<String, ProbeError> {
    let bad = || ProbeError::BadUrl(url.to_owned());
    let (scheme, rest) = url.split_once("://").ok_or_else(bad)?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    if authority.is_empty() || !matches!(scheme, "http" | "tcp") {
        return Err(bad());
    }
    let io = |source| ProbeError::Io { url: url.to_owned(), source };
    let deadline = Instant::now() + timeout;
    let addrs: Vec<SocketAddr> = authority.to_socket_addrs().map_err(io)?.collect();
    let mut last = std::io::Error::new(std::io::ErrorKind::NotFound, "no address");
    let mut stream = None;
    for addr in addrs {
        match TcpStream::connect_timeout(&addr, remaining(deadline).map_err(io)?) {
            Ok(s) => {
                stream = Some(s);
                break;
            }
            Err(e) => last = e,
        }
    }
    let mut stream = stream.ok_or(last).map_err(io)?;
    if scheme == "tcp" {
        return Ok(format!("{url}: connected"));
    }
    stream.set_write_timeout(Some(remaining(deadline).map_err(io)?)).map_err(io)?;
    let request = format!(
        "GET {path} HTTP/1.1\r\nhost: {authority}\r\nuser-agent: fulcrum-healthcheck\r\nconnection: close\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).map_err(io)?;
    // Read until the status line is complete (or the peer closes).
    let mut head = Vec::with_capacity(128);
    let mut buf = [0u8; 128];
    while !head.contains(&b'\n') && head.len() < 100 {
        stream.set_read_timeout(Some(remaining(deadline).map_err(io)?)).map_err(io)?;
        let n = stream.read(&mut buf).map_err(io)?;
        if n == 0 {
            break;
        }
        head.extend_from_slice(&buf[..n]);
    }
    let line = String::from_utf8_lossy(&head);
    let status_line: String =
        line.lines().next().unwrap_or("").trim_end().chars().take(100).collect();
    if is_2xx(&status_line) {
        Ok(format!("{url}: {status_line}"))
    } else {
        Err(ProbeError::Unhealthy { url: url.to_owned(), status_line })
    }
}

fn is_2xx(status_line: &str) -> bool {
    fulcrum_health::status_code(status_line.as_bytes())
        .is_some_and(|code| (200..300).contains(&code))
}

fn remaining(deadline: Instant) -> std::io::Result<Duration> {
    deadline
        .checked_duration_since(Instant::now())
        .filter(|d| !d.is_zero())
        .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::TimedOut, "probe timed out"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_lines() {
        assert!(is_2xx("HTTP/1.1 200 OK"));
        assert!(is_2xx("HTTP/1.0 204"));
        assert!(!is_2xx("HTTP/1.1 503 Service Unavailable"));
        assert!(!is_2xx("SSH-2.0-OpenSSH"));
        assert!(!is_2xx(""));
    }

    #[test]
    fn bad_urls() {
        for url in ["localhost:9090", "ftp://x:1/", "http:///healthz"] {
            assert!(
                matches!(probe(url, Duration::from_secs(1)), Err(ProbeError::BadUrl(_))),
                "{url}"
            );
        }
    }
}
