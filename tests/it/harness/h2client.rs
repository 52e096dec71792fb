//! HTTP/2 requests with hyperium h2 on h2c connections (prior knowledge), so a test sees
//! exactly what Fulcrum sent (status, headers, trailers) and nothing in between enforces
//! `grpc-timeout` or rewrites the response, as tonic's client would. Where even h2 is too
//! polite (it honours the server's SETTINGS before sending), tests use the raw frames of
//! [`super::h2frames`].

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use h2::client::{ResponseFuture, SendRequest};
use tonic::codegen::http;

/// What a request got back.
pub struct Answer {
    pub status: u16,
    pub headers: http::HeaderMap,
    pub body: Vec<u8>,
    pub trailers: Option<http::HeaderMap>,
    /// From sending the request (connection already up) to the end of the response.
    pub elapsed: Duration,
}

impl Answer {
    /// The gRPC status: from the trailers, or the headers of a trailers-only response.
    pub fn grpc_status(&self) -> u64 {
        let v = self.trailers.as_ref().and_then(|t| t.get("grpc-status"));
        let v = v.or_else(|| self.headers.get("grpc-status")).expect("grpc-status");
        v.to_str().unwrap().parse().unwrap()
    }
}

/// One h2c connection whose connection future runs in its own task.
pub async fn connect(addr: SocketAddr) -> SendRequest<Bytes> {
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (send, conn) = h2::client::handshake(tcp).await.unwrap();
    tokio::spawn(async move {
        let _ = conn.await;
    });
    send
}

/// One h2c connection whose connection future is a task of its own, returned so a test can
/// see how the server ended the connection.
pub async fn watched(
    addr: SocketAddr,
) -> (SendRequest<Bytes>, tokio::task::JoinHandle<Result<(), h2::Error>>) {
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (send, conn) = h2::client::handshake(tcp).await.unwrap();
    (send, tokio::spawn(conn))
}

/// A GET request for `path`.
pub fn get(addr: SocketAddr, path: &str) -> http::Request<()> {
    http::Request::get(format!("http://{addr}{path}")).body(()).unwrap()
}

/// Awaits a response and its whole body (releasing flow-control capacity as it comes).
pub async fn finish(response: ResponseFuture) -> Result<Answer, h2::Error> {
    let t = Instant::now();
    let res = response.await?;
    let status = res.status().as_u16();
    let headers = res.headers().clone();
    let mut recv = res.into_body();
    let mut body = Vec::new();
    while let Some(d) = recv.data().await {
        let d = d?;
        let _ = recv.flow_control().release_capacity(d.len());
        body.extend_from_slice(&d);
    }
    let trailers = recv.trailers().await?;
    Ok(Answer { status, headers, body, trailers, elapsed: t.elapsed() })
}

/// A plain GET on a fresh connection; returns the status.
pub async fn fresh_get(addr: SocketAddr, path: &str) -> u16 {
    let mut send = connect(addr).await.ready().await.unwrap();
    let (response, _) = send.send_request(get(addr, path), true).unwrap();
    finish(response).await.unwrap().status
}

/// One request on a fresh h2c connection; the body goes in one DATA frame.
pub async fn h2_request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Vec<u8>,
) -> Answer {
    let mut send = connect(addr).await.ready().await.unwrap();
    let mut builder = http::Request::builder().method(method).uri(format!("http://{addr}{path}"));
    for (k, v) in headers {
        builder = builder.header(*k, *v);
    }
    let t = Instant::now();
    let empty = body.is_empty();
    let (response, mut up) = send.send_request(builder.body(()).unwrap(), empty).unwrap();
    if !empty {
        up.send_data(body.into(), true).unwrap();
    }
    let answer = finish(response).await.unwrap();
    Answer { elapsed: t.elapsed(), ..answer }
}

/// [`h2_request`] from synchronous code, bounded to 10 s.
pub fn h2_request_blocking(addr: SocketAddr, method: &str, path: &str, body: &[u8]) -> Answer {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let request = h2_request(addr, method, path, &[], body.to_vec());
    rt.block_on(async { tokio::time::timeout(Duration::from_secs(10), request).await }).unwrap()
}

/// A gRPC message in its length-prefixed frame, as it crosses the wire.
pub fn framed(msg: &impl prost::Message) -> Vec<u8> {
    let msg = msg.encode_to_vec();
    let mut out = vec![0u8];
    out.extend_from_slice(&(msg.len() as u32).to_be_bytes());
    out.extend_from_slice(&msg);
    out
}

/// A gRPC call (`POST`, `content-type: application/grpc`, `te: trailers`, then `extra`) whose
/// body is already framed.
pub async fn grpc_call(
    addr: SocketAddr,
    path: &str,
    extra: &[(&str, &str)],
    body: Vec<u8>,
) -> Answer {
    let mut headers = vec![("content-type", "application/grpc"), ("te", "trailers")];
    headers.extend_from_slice(extra);
    h2_request(addr, "POST", path, &headers, body).await
}
