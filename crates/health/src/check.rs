//! One active check of one backend, on a new connection each time: a small HTTP/1.1 `GET` for
//! `http://` and `https://` backends, the gRPC health-checking protocol over HTTP/2 for
//! `h2c://` and `h2://` backends. TLS backends are checked over TLS, with the same trust
//! anchors and client certificate as the data path (`[upstream_tls]`).

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use fulcrum_config::{ActiveHealth, BackendProtocol, BackendUrl};
use fulcrum_tls::rustls::ClientConfig;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

/// The most response bytes an HTTP check reads looking for the status line.
const MAX_STATUS_LINE: usize = 1024;
/// The largest gRPC `HealthCheckResponse` accepted, frame header included.
const MAX_GRPC_RESPONSE: usize = 1024;
/// gRPC `HealthCheckResponse.ServingStatus.SERVING`.
const SERVING: u64 = 1;

/// Why a check failed (the `last_error` the admin API shows and the log reason).
#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    /// The whole check took longer than `timeout_ms`.
    #[error("timed out after {0} ms")]
    Timeout(u64),
    /// The TCP connect failed.
    #[error("connect: {0}")]
    Connect(std::io::Error),
    /// Writing the request or reading the answer failed.
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    /// The HTTP/2 exchange failed.
    #[error("h2: {0}")]
    H2(#[from] h2::Error),
    /// The answer is not what the protocol allows.
    #[error("bad answer: {0}")]
    BadAnswer(&'static str),
    /// The TLS handshake failed (a refused certificate included), or TLS is unavailable.
    #[error("tls: {0}")]
    Tls(String),
    /// The HTTP status is not 2xx or 3xx.
    #[error("status {0}")]
    Status(u16),
    /// The gRPC call ended with a non-zero `grpc-status`.
    #[error("grpc-status {0}")]
    GrpcStatus(String),
    /// The service answered with a status other than `SERVING`.
    #[error("serving status {0} (not SERVING)")]
    NotServing(u64),
}

/// How the checks speak TLS to `https://` and `h2://` backends: the data path's client
/// configuration (trust anchors, client certificate), with ALPN set per protocol.
#[derive(Clone)]
pub struct CheckTls {
    http1: TlsConnector,
    h2: TlsConnector,
    server_name: Option<String>,
}

impl std::fmt::Debug for CheckTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CheckTls").field("server_name", &self.server_name).finish_non_exhaustive()
    }
}

impl CheckTls {
    /// From the data path's client configuration and its `upstream_tls.server_name`.
    pub fn new(config: &Arc<ClientConfig>, server_name: Option<String>) -> Self {
        let with_alpn = |alpn: &[u8]| {
            let mut c = ClientConfig::clone(config);
            c.alpn_protocols = vec![alpn.to_vec()];
            TlsConnector::from(Arc::new(c))
        };
        Self { http1: with_alpn(b"http/1.1"), h2: with_alpn(b"h2"), server_name }
    }
}

/// Runs one check of `url` (no deadline of its own: the caller bounds it with `timeout_ms`).
pub async fn check(
    url: &BackendUrl,
    settings: &ActiveHealth,
    tls: Option<&CheckTls>,
) -> Result<(), CheckError> {
    let stream = connect(url.addr).await?;
    if !url.tls {
        return check_over(stream, url, settings).await;
    }
    let tls = tls.ok_or_else(|| CheckError::Tls("upstream TLS is not available".into()))?;
    let connector = match url.protocol {
        BackendProtocol::Http1 => &tls.http1,
        BackendProtocol::H2c => &tls.h2,
    };
    let name = tls.server_name.as_deref().unwrap_or(&url.host);
    let name = fulcrum_tls::server_name(name).map_err(|e| CheckError::Tls(e.to_string()))?;
    let stream =
        connector.connect(name, stream).await.map_err(|e| CheckError::Tls(e.to_string()))?;
    check_over(stream, url, settings).await
}

/// The check of `url`'s protocol over an established connection.
async fn check_over<S>(
    stream: S,
    url: &BackendUrl,
    settings: &ActiveHealth,
) -> Result<(), CheckError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    match url.protocol {
        BackendProtocol::Http1 => http_check(stream, &url.authority, &settings.path).await,
        BackendProtocol::H2c => grpc_check(stream, &url.authority, &settings.grpc_service).await,
    }
}

async fn connect(addr: SocketAddr) -> Result<TcpStream, CheckError> {
    let stream = TcpStream::connect(addr).await.map_err(CheckError::Connect)?;
    let _ = stream.set_nodelay(true);
    Ok(stream)
}

/// `GET path` with `Connection: close`; passes on a 2xx or 3xx status line.
async fn http_check<S>(mut stream: S, authority: &str, path: &str) -> Result<(), CheckError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let request = format!(
        "GET {path} HTTP/1.1\r\nhost: {authority}\r\nuser-agent: fulcrum-health-check\r\n\
         accept: */*\r\nconnection: close\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).await?;
    stream.flush().await?;
    let mut buf = [0u8; MAX_STATUS_LINE];
    let mut len = 0;
    let line_end = loop {
        if let Some(i) = buf[..len].windows(2).position(|w| w == b"\r\n") {
            break i;
        }
        if len == buf.len() {
            return Err(CheckError::BadAnswer("status line too long"));
        }
        match stream.read(&mut buf[len..]).await? {
            0 => return Err(CheckError::BadAnswer("connection closed before a status line")),
            n => len += n,
        }
    };
    let status = status_code(&buf[..line_end])
        .ok_or(CheckError::BadAnswer("not an HTTP/1.x status line"))?;
    if (200..400).contains(&status) { Ok(()) } else { Err(CheckError::Status(status)) }
}

/// The status code of an `HTTP/1.x NNN reason` status line (also used by the container probe,
/// `fulcrum healthcheck`).
pub fn status_code(line: &[u8]) -> Option<u16> {
    match line.strip_prefix(b"HTTP/1.")? {
        [b'0' | b'1', b' ', a, b, c, ..] if [a, b, c].iter().all(|d| d.is_ascii_digit()) => {
            Some(u16::from(a - b'0') * 100 + u16::from(b - b'0') * 10 + u16::from(c - b'0'))
        }
        _ => None,
    }
}

/// `grpc.health.v1.Health/Check` for `service`; passes on `grpc-status: 0` with `SERVING`.
async fn grpc_check<S>(stream: S, authority: &str, service: &str) -> Result<(), CheckError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let (client, connection) = h2::client::handshake(stream).await?;
    let call = async move {
        let mut client = client.ready().await?;
        let request = http::Request::builder()
            .method(http::Method::POST)
            .uri(format!("http://{authority}/grpc.health.v1.Health/Check"))
            .version(http::Version::HTTP_2)
            .header("content-type", "application/grpc")
            .header("te", "trailers")
            .header("user-agent", "fulcrum-health-check")
            .body(())
            .map_err(|_| CheckError::BadAnswer("cannot build the request"))?;
        let (response, mut send) = client.send_request(request, false)?;
        send.send_data(health_check_request(service), true)?;
        let response = response.await?;
        if response.status() != http::StatusCode::OK {
            return Err(CheckError::Status(response.status().as_u16()));
        }
        let (head, mut body) = response.into_parts();
        // A trailers-only answer carries grpc-status in the headers.
        if let Some(status) = head.headers.get("grpc-status") {
            return Err(grpc_failure(status.as_bytes()));
        }
        let mut message = BytesMut::new();
        while let Some(chunk) = body.data().await {
            let chunk = chunk?;
            let _ = body.flow_control().release_capacity(chunk.len());
            if message.len() + chunk.len() > MAX_GRPC_RESPONSE {
                return Err(CheckError::BadAnswer("response too large"));
            }
            message.put(chunk);
        }
        let trailers = body.trailers().await?;
        let status = trailers.as_ref().and_then(|t| t.get("grpc-status"));
        match status.map(|s| s.as_bytes()) {
            Some(b"0") => {}
            Some(other) => return Err(grpc_failure(other)),
            None => return Err(CheckError::BadAnswer("no grpc-status")),
        }
        match serving_status(message.freeze())? {
            SERVING => Ok(()),
            other => Err(CheckError::NotServing(other)),
        }
    };
    tokio::select! {
        result = call => result,
        result = connection => {
            result?;
            Err(CheckError::BadAnswer("connection closed during the call"))
        }
    }
}

fn grpc_failure(status: &[u8]) -> CheckError {
    if status == b"0" {
        CheckError::BadAnswer("grpc-status 0 without a message")
    } else {
        CheckError::GrpcStatus(String::from_utf8_lossy(status).into_owned())
    }
}

/// A length-prefixed, uncompressed `HealthCheckRequest { service }` (field 1, string).
fn health_check_request(service: &str) -> Bytes {
    let mut message = BytesMut::with_capacity(service.len() + 16);
    if !service.is_empty() {
        message.put_u8(0x0a);
        put_varint(&mut message, service.len() as u64);
        message.put_slice(service.as_bytes());
    }
    let mut frame = BytesMut::with_capacity(5 + message.len());
    frame.put_u8(0);
    frame.put_u32(message.len() as u32);
    frame.put(message);
    frame.freeze()
}

fn put_varint(out: &mut BytesMut, mut v: u64) {
    while v >= 0x80 {
        out.put_u8((v as u8) | 0x80);
        v >>= 7;
    }
    out.put_u8(v as u8);
}

fn get_varint(buf: &mut Bytes) -> Result<u64, CheckError> {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        if !buf.has_remaining() {
            break;
        }
        let b = buf.get_u8();
        v |= u64::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            return Ok(v);
        }
    }
    Err(CheckError::BadAnswer("malformed varint"))
}

/// The `status` (field 1) of one length-prefixed `HealthCheckResponse`; absent means 0
/// (`UNKNOWN`), as proto3 omits default values.
fn serving_status(mut frame: Bytes) -> Result<u64, CheckError> {
    if frame.len() < 5 {
        return Err(CheckError::BadAnswer("no response message"));
    }
    if frame.get_u8() != 0 {
        return Err(CheckError::BadAnswer("compressed response message"));
    }
    let len = frame.get_u32() as usize;
    if len != frame.len() {
        return Err(CheckError::BadAnswer("response message length mismatch"));
    }
    let mut status = 0;
    while frame.has_remaining() {
        let key = get_varint(&mut frame)?;
        match key & 7 {
            0 => {
                let v = get_varint(&mut frame)?;
                if key >> 3 == 1 {
                    status = v;
                }
            }
            1 if frame.remaining() >= 8 => frame.advance(8),
            2 => {
                let n = get_varint(&mut frame)? as usize;
                if n > frame.remaining() {
                    return Err(CheckError::BadAnswer("truncated field"));
                }
                frame.advance(n);
            }
            5 if frame.remaining() >= 4 => frame.advance(4),
            _ => return Err(CheckError::BadAnswer("malformed response message")),
        }
    }
    Ok(status)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_lines() {
        assert_eq!(status_code(b"HTTP/1.1 200 OK").unwrap(), 200);
        assert_eq!(status_code(b"HTTP/1.0 503 Busy").unwrap(), 503);
        assert_eq!(status_code(b"HTTP/1.1 204").unwrap(), 204);
        for bad in [&b"HTTP/2 200"[..], b"HTTP/1.1 20", b"HTTP/1.1 2x0 OK", b"hello"] {
            assert!(status_code(bad).is_none(), "{bad:?}");
        }
    }

    #[test]
    fn request_encoding() {
        assert_eq!(&health_check_request("")[..], [0, 0, 0, 0, 0]);
        assert_eq!(&health_check_request("ab")[..], [0, 0, 0, 0, 4, 0x0a, 2, b'a', b'b']);
    }

    #[test]
    fn response_decoding() {
        let frame = |msg: &[u8]| {
            let mut f = vec![0, 0, 0, 0, msg.len() as u8];
            f.extend_from_slice(msg);
            Bytes::from(f)
        };
        assert_eq!(serving_status(frame(&[0x08, 1])).unwrap(), SERVING);
        assert_eq!(serving_status(frame(&[0x08, 2])).unwrap(), 2);
        assert_eq!(serving_status(frame(&[])).unwrap(), 0);
        // Unknown fields are skipped.
        assert_eq!(serving_status(frame(&[0x12, 1, b'x', 0x08, 1])).unwrap(), SERVING);
        assert!(serving_status(frame(&[0x12, 5, b'x'])).is_err());
        assert!(serving_status(Bytes::from_static(&[1, 0, 0, 0, 0])).is_err());
        assert!(serving_status(Bytes::from_static(&[0, 0, 0])).is_err());
    }
}
