//! gRPC backends and clients: the [`echo`](super::echo) service on its own thread and runtime
//! ([`EchoBackend`], killable at once), and a tonic client of it ([`GrpcClient`]).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering::SeqCst;

use tonic::codegen::http::uri::PathAndQuery;
use tonic::{Request, Response, Status, Streaming};
use tonic_prost::ProstCodec;

use super::echo::{EchoReply, EchoRequest, EchoState, Outbound, bind, serve};

/// An echo backend on its own thread and runtime; `kill` (or drop) drops every task and socket
/// at once.
pub struct EchoBackend {
    addr: SocketAddr,
    pub state: Arc<EchoState>,
    kill: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl EchoBackend {
    /// Serves the echo service as `name` on an ephemeral loopback port.
    pub fn spawn(name: &str) -> Self {
        let listener = bind("127.0.0.1:0".parse().unwrap());
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(EchoState { name: name.to_owned(), ..Default::default() });
        let (kill, killed) = tokio::sync::oneshot::channel();
        let st = state.clone();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).unwrap();
                tokio::select! {
                    _ = serve(listener, st) => {}
                    _ = killed => {}
                }
            });
            // Dropping the runtime drops every connection task: the sockets close at once.
            rt.shutdown_background();
        });
        Self { addr, state, kill: Some(kill), thread: Some(thread) }
    }

    /// Its `h2c://` URL.
    pub fn url(&self) -> String {
        format!("h2c://{}", self.addr)
    }

    /// Calls started.
    pub fn calls(&self) -> u64 {
        self.state.calls.load(SeqCst)
    }

    /// Calls the client cancelled.
    pub fn cancelled(&self) -> u64 {
        self.state.cancelled.load(SeqCst)
    }

    /// Health checks answered.
    pub fn health_checks(&self) -> u64 {
        self.state.health_checks.load(SeqCst)
    }

    /// Dies at once: the listener and every connection close.
    pub fn kill(&mut self) {
        if let Some(k) = self.kill.take() {
            let _ = k.send(());
        }
        if let Some(t) = self.thread.take() {
            t.join().unwrap();
        }
    }
}

impl Drop for EchoBackend {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A tonic gRPC client of the echo service over one HTTP/2 connection.
#[derive(Clone)]
pub struct GrpcClient(tonic::client::Grpc<tonic::transport::Channel>);

impl GrpcClient {
    /// Connects (h2c, prior knowledge) to `addr`.
    pub async fn connect(addr: SocketAddr) -> Self {
        let endpoint = tonic::transport::Endpoint::from_shared(format!("http://{addr}")).unwrap();
        Self::over(endpoint.connect().await.unwrap())
    }

    /// A client over an existing channel.
    pub fn over(channel: tonic::transport::Channel) -> Self {
        Self(
            tonic::client::Grpc::new(channel)
                .max_decoding_message_size(64 << 20)
                .max_encoding_message_size(64 << 20),
        )
    }

    pub async fn unary(
        &mut self,
        req: Request<EchoRequest>,
    ) -> Result<Response<EchoReply>, Status> {
        self.0.ready().await.map_err(|e| Status::unknown(e.to_string()))?;
        let path = PathAndQuery::from_static("/echo.Echo/Unary");
        self.0.unary(req, path, ProstCodec::default()).await
    }

    /// A unary call with `message`; the reply.
    pub async fn say(&mut self, message: &str) -> Result<EchoReply, Status> {
        Ok(self.unary(Request::new(msg(message))).await?.into_inner())
    }

    /// A unary call with `message` to `/<service>/Unary` (`echo.Echo` or `echo.Mirror`).
    pub async fn say_to(&mut self, service: &str, message: &str) -> Result<EchoReply, Status> {
        self.0.ready().await.map_err(|e| Status::unknown(e.to_string()))?;
        let path = PathAndQuery::try_from(format!("/{service}/Unary")).unwrap();
        let res = self.0.unary(Request::new(msg(message)), path, ProstCodec::default()).await;
        Ok(res?.into_inner())
    }

    pub async fn server_stream(
        &mut self,
        req: EchoRequest,
    ) -> Result<Streaming<EchoReply>, Status> {
        self.0.ready().await.map_err(|e| Status::unknown(e.to_string()))?;
        let path = PathAndQuery::from_static("/echo.Echo/ServerStream");
        let res = self.0.server_streaming(Request::new(req), path, ProstCodec::default()).await;
        Ok(res?.into_inner())
    }

    pub async fn client_stream(&mut self, reqs: Outbound) -> Result<EchoReply, Status> {
        self.0.ready().await.map_err(|e| Status::unknown(e.to_string()))?;
        let path = PathAndQuery::from_static("/echo.Echo/ClientStream");
        let res = self.0.client_streaming(Request::new(reqs), path, ProstCodec::default()).await;
        Ok(res?.into_inner())
    }

    pub async fn bidi(&mut self, reqs: Outbound) -> Result<Streaming<EchoReply>, Status> {
        self.0.ready().await.map_err(|e| Status::unknown(e.to_string()))?;
        let path = PathAndQuery::from_static("/echo.Echo/Bidi");
        Ok(self.0.streaming(Request::new(reqs), path, ProstCodec::default()).await?.into_inner())
    }
}

/// Makes one call of each kind through `c` and checks the answers of the echo backend named
/// `backend`: unary (and its `x-backend`), server streaming (five messages in order), client
/// streaming (three joined), and a bidi ping-pong (each request sent only after the previous
/// reply came back, so nothing may be held back in either direction).
pub async fn four_call_kinds(c: &mut GrpcClient, backend: &str) {
    let res = c.unary(Request::new(msg("hello"))).await.unwrap();
    assert_eq!(res.metadata().get("x-backend").unwrap(), backend);
    assert_eq!(res.get_ref().message, "hello");

    let req = EchoRequest { message: "s".into(), count: 5, ..Default::default() };
    let mut stream = c.server_stream(req).await.unwrap();
    let mut seqs = Vec::new();
    while let Some(m) = stream.message().await.unwrap() {
        seqs.push(m.seq);
    }
    assert_eq!(seqs, [0, 1, 2, 3, 4]);

    let parts = tokio_stream::iter(["a", "b", "c"].map(msg));
    let joined = c.client_stream(Box::pin(parts)).await.unwrap();
    assert_eq!((joined.message.as_str(), joined.seq), ("abc", 3));

    let (tx, rx) = tokio::sync::mpsc::channel::<EchoRequest>(1);
    let mut replies =
        c.bidi(Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx))).await.unwrap();
    for i in 0..5 {
        tx.send(msg(&format!("ping{i}"))).await.unwrap();
        let reply = replies.message().await.unwrap().unwrap();
        assert_eq!((reply.message, reply.seq), (format!("ping{i}"), i));
    }
    drop(tx);
    assert!(replies.message().await.unwrap().is_none());
}

/// A request with only `message` set.
pub fn msg(message: &str) -> EchoRequest {
    EchoRequest { message: message.into(), ..Default::default() }
}
