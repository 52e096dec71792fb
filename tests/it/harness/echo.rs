//! A small gRPC echo service written by hand (prost messages + tonic server glue), so neither
//! the tests nor the bench backend need `protoc`. The proto it implements:
//!
//! ```proto
//! package echo;
//! message EchoRequest { string message = 1; bytes payload = 2; uint32 count = 3;
//!                       uint64 delay_ms = 4; int32 fail_code = 5; }
//! message EchoReply   { string message = 1; bytes payload = 2; string backend = 3; uint32 seq = 4; }
//! service Echo {
//!   rpc Unary(EchoRequest) returns (EchoReply);
//!   rpc ServerStream(EchoRequest) returns (stream EchoReply);   // `count` replies, `delay_ms` apart
//!   rpc ClientStream(stream EchoRequest) returns (EchoReply);   // messages joined, payloads concatenated
//!   rpc Bidi(stream EchoRequest) returns (stream EchoReply);    // one reply per request
//! }
//! ```
//! `fail_code` != 0 fails the call with that code and custom metadata (`x-custom`, `x-detail-bin`);
//! on ServerStream it fails after `count` replies, so the status travels in real trailers.
//!
//! It also answers the standard health check, `grpc.health.v1.Health/Check`
//! (`HealthCheckRequest { string service = 1; }` -> `HealthCheckResponse { ServingStatus status = 1; }`):
//! `SERVING` (1) for the service `""` unless [`EchoState::not_serving`] is set (then
//! `NOT_SERVING`, 2), `NOT_FOUND` for any other service name.
//!
//! Shared with `examples/grpc_echo.rs` (the bench backend), which uses the server alone.

#![allow(dead_code)] // the bench backend (examples/grpc_echo.rs) uses only the server

use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::SeqCst};
use std::task::{Context, Poll};
use std::time::Duration;

use tonic::codegen::{BoxFuture, Service, http};
use tonic::server::{
    ClientStreamingService, ServerStreamingService, StreamingService, UnaryService,
};
use tonic::{Code, Request, Response, Status, Streaming};
use tonic_prost::ProstCodec;

/// Request message.
#[derive(Clone, PartialEq, prost::Message)]
pub struct EchoRequest {
    #[prost(string, tag = "1")]
    pub message: String,
    #[prost(bytes = "vec", tag = "2")]
    pub payload: Vec<u8>,
    #[prost(uint32, tag = "3")]
    pub count: u32,
    #[prost(uint64, tag = "4")]
    pub delay_ms: u64,
    #[prost(int32, tag = "5")]
    pub fail_code: i32,
}

/// Reply message.
#[derive(Clone, PartialEq, prost::Message)]
pub struct EchoReply {
    #[prost(string, tag = "1")]
    pub message: String,
    #[prost(bytes = "vec", tag = "2")]
    pub payload: Vec<u8>,
    #[prost(string, tag = "3")]
    pub backend: String,
    #[prost(uint32, tag = "4")]
    pub seq: u32,
}

/// What one backend saw.
#[derive(Debug, Default)]
pub struct EchoState {
    pub name: String,
    /// Calls started.
    pub calls: AtomicU64,
    /// Calls whose handler was dropped or whose reply stream was closed before completion
    /// (the client cancelled).
    pub cancelled: AtomicU64,
    /// Health checks answered (not counted in `calls`).
    pub health_checks: AtomicU64,
    /// Health checks answer `NOT_SERVING` while set.
    pub not_serving: AtomicBool,
    /// Replies of server streams handed to the transport (which takes them only as the
    /// HTTP/2 window allows).
    pub replies_sent: AtomicU64,
}

/// `grpc.health.v1.HealthCheckRequest`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct HealthCheckRequest {
    #[prost(string, tag = "1")]
    pub service: String,
}

/// `grpc.health.v1.HealthCheckResponse` (`status` is the `ServingStatus` enum).
#[derive(Clone, PartialEq, prost::Message)]
pub struct HealthCheckResponse {
    #[prost(int32, tag = "1")]
    pub status: i32,
}

struct HealthCheck(Arc<EchoState>);
impl UnaryService<HealthCheckRequest> for HealthCheck {
    type Response = HealthCheckResponse;
    type Future = BoxFuture<Response<HealthCheckResponse>, Status>;
    fn call(&mut self, req: Request<HealthCheckRequest>) -> Self::Future {
        let state = self.0.clone();
        Box::pin(async move {
            state.health_checks.fetch_add(1, SeqCst);
            if !req.into_inner().service.is_empty() {
                return Err(Status::not_found("unknown service"));
            }
            let status = if state.not_serving.load(SeqCst) { 2 } else { 1 };
            Ok(Response::new(HealthCheckResponse { status }))
        })
    }
}

/// The service; clone is cheap.
#[derive(Debug, Clone)]
pub struct EchoService {
    pub state: Arc<EchoState>,
}

impl tonic::server::NamedService for EchoService {
    const NAME: &'static str = "echo.Echo";
}

fn failure(code: i32) -> Status {
    let mut md = tonic::metadata::MetadataMap::new();
    md.insert("x-custom", "custom-value".parse().unwrap());
    md.insert_bin("x-detail-bin", tonic::metadata::MetadataValue::from_bytes(&[0, 1, 2, 255]));
    Status::with_metadata(Code::from_i32(code), "requested failure", md)
}

/// Counts a cancellation if dropped before `done`.
struct CancelGuard {
    state: Arc<EchoState>,
    done: bool,
}

impl Drop for CancelGuard {
    fn drop(&mut self) {
        if !self.done {
            self.state.cancelled.fetch_add(1, SeqCst);
        }
    }
}

struct Unary(Arc<EchoState>);
impl UnaryService<EchoRequest> for Unary {
    type Response = EchoReply;
    type Future = BoxFuture<Response<EchoReply>, Status>;
    fn call(&mut self, req: Request<EchoRequest>) -> Self::Future {
        let state = self.0.clone();
        Box::pin(async move {
            state.calls.fetch_add(1, SeqCst);
            let mut guard = CancelGuard { state: state.clone(), done: false };
            let req = req.into_inner();
            if req.delay_ms > 0 {
                tokio::time::sleep(Duration::from_millis(req.delay_ms)).await;
            }
            guard.done = true;
            if req.fail_code != 0 {
                return Err(failure(req.fail_code));
            }
            let mut res = Response::new(EchoReply {
                message: req.message,
                payload: req.payload,
                backend: state.name.clone(),
                seq: 0,
            });
            res.metadata_mut().insert("x-backend", state.name.parse().unwrap());
            Ok(res)
        })
    }
}

type ReplyStream = tokio_stream::wrappers::ReceiverStream<Result<EchoReply, Status>>;

struct ServerStream(Arc<EchoState>);
impl ServerStreamingService<EchoRequest> for ServerStream {
    type Response = EchoReply;
    type ResponseStream = ReplyStream;
    type Future = BoxFuture<Response<ReplyStream>, Status>;
    fn call(&mut self, req: Request<EchoRequest>) -> Self::Future {
        let state = self.0.clone();
        Box::pin(async move {
            state.calls.fetch_add(1, SeqCst);
            let req = req.into_inner();
            let (tx, rx) = tokio::sync::mpsc::channel(4);
            tokio::spawn(async move {
                for seq in 0..req.count {
                    if req.delay_ms > 0 {
                        tokio::time::sleep(Duration::from_millis(req.delay_ms)).await;
                    }
                    let reply = EchoReply {
                        message: req.message.clone(),
                        payload: req.payload.clone(),
                        backend: state.name.clone(),
                        seq,
                    };
                    if tx.send(Ok(reply)).await.is_err() {
                        state.cancelled.fetch_add(1, SeqCst);
                        return;
                    }
                    state.replies_sent.fetch_add(1, SeqCst);
                }
                if req.fail_code != 0 {
                    let _ = tx.send(Err(failure(req.fail_code))).await;
                }
            });
            Ok(Response::new(ReplyStream::new(rx)))
        })
    }
}

struct ClientStream(Arc<EchoState>);
impl ClientStreamingService<EchoRequest> for ClientStream {
    type Response = EchoReply;
    type Future = BoxFuture<Response<EchoReply>, Status>;
    fn call(&mut self, req: Request<Streaming<EchoRequest>>) -> Self::Future {
        let state = self.0.clone();
        Box::pin(async move {
            state.calls.fetch_add(1, SeqCst);
            let mut stream = req.into_inner();
            let mut reply = EchoReply { backend: state.name.clone(), ..Default::default() };
            while let Some(msg) = stream.message().await? {
                reply.message.push_str(&msg.message);
                reply.payload.extend_from_slice(&msg.payload);
                reply.seq += 1;
            }
            Ok(Response::new(reply))
        })
    }
}

struct Bidi(Arc<EchoState>);
impl StreamingService<EchoRequest> for Bidi {
    type Response = EchoReply;
    type ResponseStream = ReplyStream;
    type Future = BoxFuture<Response<ReplyStream>, Status>;
    fn call(&mut self, req: Request<Streaming<EchoRequest>>) -> Self::Future {
        let state = self.0.clone();
        Box::pin(async move {
            state.calls.fetch_add(1, SeqCst);
            let mut stream = req.into_inner();
            let (tx, rx) = tokio::sync::mpsc::channel(4);
            tokio::spawn(async move {
                let mut seq = 0;
                loop {
                    match stream.message().await {
                        Ok(Some(msg)) => {
                            let reply = EchoReply {
                                message: msg.message,
                                payload: msg.payload,
                                backend: state.name.clone(),
                                seq,
                            };
                            seq += 1;
                            if tx.send(Ok(reply)).await.is_err() {
                                state.cancelled.fetch_add(1, SeqCst);
                                return;
                            }
                        }
                        Ok(None) => return,
                        Err(_) => {
                            state.cancelled.fetch_add(1, SeqCst);
                            return;
                        }
                    }
                }
            });
            Ok(Response::new(ReplyStream::new(rx)))
        })
    }
}

fn grpc() -> tonic::server::Grpc<ProstCodec<EchoReply, EchoRequest>> {
    tonic::server::Grpc::new(ProstCodec::default())
        .max_decoding_message_size(64 << 20)
        .max_encoding_message_size(64 << 20)
}

impl<B> Service<http::Request<B>> for EchoService
where
    B: tonic::codegen::Body<Data = tonic::codegen::Bytes> + Send + 'static,
    B::Error: Into<tonic::codegen::StdError> + Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = BoxFuture<Self::Response, Infallible>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let state = self.state.clone();
        match req.uri().path() {
            // `echo.Mirror` is the same unary method under a second service name, so one
            // backend serves two services (routing tests send them to different pools).
            "/echo.Echo/Unary" | "/echo.Mirror/Unary" => {
                Box::pin(async move { Ok(grpc().unary(Unary(state), req).await) })
            }
            "/echo.Echo/ServerStream" => {
                Box::pin(async move { Ok(grpc().server_streaming(ServerStream(state), req).await) })
            }
            "/echo.Echo/ClientStream" => {
                Box::pin(async move { Ok(grpc().client_streaming(ClientStream(state), req).await) })
            }
            "/grpc.health.v1.Health/Check" => Box::pin(async move {
                let mut grpc = tonic::server::Grpc::new(ProstCodec::default());
                Ok(grpc.unary(HealthCheck(state), req).await)
            }),
            "/echo.Echo/Bidi" => {
                Box::pin(async move { Ok(grpc().streaming(Bidi(state), req).await) })
            }
            _ => Box::pin(async move { Ok(Status::unimplemented("no such method").into_http()) }),
        }
    }
}

/// Serves the echo service on `listener` until the runtime stops.
pub async fn serve(listener: tokio::net::TcpListener, state: Arc<EchoState>) {
    let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
    let _ = tonic::transport::Server::builder()
        .serve_with_incoming(EchoService { state }, incoming)
        .await;
}

/// Binds `addr` (std, so the port is known before the runtime runs).
pub fn bind(addr: SocketAddr) -> std::net::TcpListener {
    let l = std::net::TcpListener::bind(addr).unwrap();
    l.set_nonblocking(true).unwrap();
    l
}

/// Boxed message stream for client-side streaming calls.
pub type Outbound = Pin<Box<dyn tokio_stream::Stream<Item = EchoRequest> + Send + 'static>>;
