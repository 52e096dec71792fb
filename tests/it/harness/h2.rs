//! Raw HTTP/2 calls for the gRPC tests: one request on a fresh h2c connection (prior knowledge)
//! with hyperium h2, so a test sees exactly what Fulcrum sent (status, headers, trailers) and
//! nothing in between enforces `grpc-timeout` or rewrites the response, as tonic's client would.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tonic::codegen::http;

/// What a raw HTTP/2 request got back.
pub struct Answer {
    pub status: u16,
    pub headers: http::HeaderMap,
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

/// One request on a fresh h2c connection; the body goes in one DATA frame.
pub async fn h2_request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Vec<u8>,
) -> Answer {
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut send, conn) = h2::client::handshake(tcp).await.unwrap();
    tokio::spawn(async move {
        let _ = conn.await;
    });
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
    let res = response.await.unwrap();
    let status = res.status().as_u16();
    let headers = res.headers().clone();
    let mut recv = res.into_body();
    while let Some(d) = recv.data().await {
        let d = d.unwrap();
        let _ = recv.flow_control().release_capacity(d.len());
    }
    let trailers = recv.trailers().await.unwrap();
    Answer { status, headers, trailers, elapsed: t.elapsed() }
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
