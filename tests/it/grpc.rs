//! gRPC and HTTP/2 through the real binary: tonic clients talk h2c (prior knowledge) to Fulcrum,
//! which balances every call over tonic echo backends (`h2c://`) and plain HTTP/1.1 backends.
//!
//! Waiting is done on conditions (backend counters, stream messages) with deadlines; every test
//! runs under an overall timeout.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
#[path = "grpc_common/echo.rs"]
mod echo;
#[path = "grpc_common/raw_h2.rs"]
mod raw_h2;

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering::SeqCst;
use std::time::{Duration, Instant};

use common::{Fulcrum, TestBackend};
use echo::{EchoReply, EchoRequest, EchoState};
use raw_h2::{Answer, framed, grpc_call};
use tonic::codegen::http::uri::PathAndQuery;
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Status};
use tonic_prost::ProstCodec;

/// An echo backend on its own thread and runtime; `kill` drops every task and socket at once.
struct Backend {
    addr: SocketAddr,
    state: Arc<EchoState>,
    kill: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Backend {
    fn spawn(name: &str) -> Self {
        let listener = echo::bind("127.0.0.1:0".parse().unwrap());
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(EchoState { name: name.to_owned(), ..Default::default() });
        let (kill, killed) = tokio::sync::oneshot::channel();
        let st = state.clone();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).unwrap();
                tokio::select! {
                    _ = echo::serve(listener, st) => {}
                    _ = killed => {}
                }
            });
            // Dropping the runtime drops every connection task: the sockets close at once.
            rt.shutdown_background();
        });
        Self { addr, state, kill: Some(kill), thread: Some(thread) }
    }

    fn url(&self) -> String {
        format!("h2c://{}", self.addr)
    }

    fn calls(&self) -> u64 {
        self.state.calls.load(SeqCst)
    }

    fn cancelled(&self) -> u64 {
        self.state.cancelled.load(SeqCst)
    }

    fn kill(&mut self) {
        if let Some(k) = self.kill.take() {
            let _ = k.send(());
        }
        if let Some(t) = self.thread.take() {
            t.join().unwrap();
        }
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.kill();
    }
}

fn start(backends: &[String], extra: &[&str]) -> Fulcrum {
    let mut args: Vec<String> =
        backends.iter().flat_map(|b| ["--backend".into(), b.clone()]).collect();
    args.extend(extra.iter().map(|s| s.to_string()));
    Fulcrum::start(&args)
}

/// Runs `f` on a fresh current-thread runtime, failing the test after 60 s.
fn run<F: Future>(f: F) -> F::Output {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        tokio::time::timeout(Duration::from_secs(60), f).await.expect("test timed out")
    })
}

/// A gRPC client over one HTTP/2 connection to Fulcrum.
#[derive(Clone)]
struct Client(tonic::client::Grpc<Channel>);

impl Client {
    async fn connect(addr: SocketAddr) -> Self {
        let channel =
            Endpoint::from_shared(format!("http://{addr}")).unwrap().connect().await.unwrap();
        Self::over(channel)
    }

    fn over(channel: Channel) -> Self {
        Self(
            tonic::client::Grpc::new(channel)
                .max_decoding_message_size(64 << 20)
                .max_encoding_message_size(64 << 20),
        )
    }

    async fn unary(
        &mut self,
        req: tonic::Request<EchoRequest>,
    ) -> Result<tonic::Response<EchoReply>, Status> {
        self.0.ready().await.map_err(|e| Status::unknown(e.to_string()))?;
        let path = PathAndQuery::from_static("/echo.Echo/Unary");
        self.0.unary(req, path, ProstCodec::default()).await
    }

    async fn say(&mut self, message: &str) -> Result<EchoReply, Status> {
        let req = EchoRequest { message: message.into(), ..Default::default() };
        Ok(self.unary(tonic::Request::new(req)).await?.into_inner())
    }

    async fn server_stream(
        &mut self,
        req: EchoRequest,
    ) -> Result<tonic::Streaming<EchoReply>, Status> {
        self.0.ready().await.map_err(|e| Status::unknown(e.to_string()))?;
        let path = PathAndQuery::from_static("/echo.Echo/ServerStream");
        Ok(self
            .0
            .server_streaming(tonic::Request::new(req), path, ProstCodec::default())
            .await?
            .into_inner())
    }

    async fn client_stream(&mut self, reqs: echo::Outbound) -> Result<EchoReply, Status> {
        self.0.ready().await.map_err(|e| Status::unknown(e.to_string()))?;
        let path = PathAndQuery::from_static("/echo.Echo/ClientStream");
        Ok(self
            .0
            .client_streaming(tonic::Request::new(reqs), path, ProstCodec::default())
            .await?
            .into_inner())
    }

    async fn bidi(&mut self, reqs: echo::Outbound) -> Result<tonic::Streaming<EchoReply>, Status> {
        self.0.ready().await.map_err(|e| Status::unknown(e.to_string()))?;
        let path = PathAndQuery::from_static("/echo.Echo/Bidi");
        Ok(self
            .0
            .streaming(tonic::Request::new(reqs), path, ProstCodec::default())
            .await?
            .into_inner())
    }
}

fn msg(message: &str) -> EchoRequest {
    EchoRequest { message: message.into(), ..Default::default() }
}

#[test]
fn the_four_call_kinds() {
    let backend = Backend::spawn("b1");
    let lb = start(&[backend.url()], &[]);
    run(async {
        let mut c = Client::connect(lb.addr()).await;

        let res = c.unary(tonic::Request::new(msg("hello"))).await.unwrap();
        assert_eq!(res.metadata().get("x-backend").unwrap(), "b1");
        assert_eq!(res.get_ref().message, "hello");

        let mut stream = c
            .server_stream(EchoRequest { message: "s".into(), count: 5, ..Default::default() })
            .await
            .unwrap();
        let mut seqs = Vec::new();
        while let Some(m) = stream.message().await.unwrap() {
            seqs.push(m.seq);
        }
        assert_eq!(seqs, [0, 1, 2, 3, 4]);

        let parts = tokio_stream::iter(["a", "b", "c"].map(msg));
        let joined = c.client_stream(Box::pin(parts)).await.unwrap();
        assert_eq!((joined.message.as_str(), joined.seq), ("abc", 3));

        // Bidi ping-pong: each request is sent only after the previous reply came back, so
        // nothing may be held back in either direction.
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
    });
}

#[test]
fn non_ok_status_keeps_custom_and_binary_metadata() {
    let backend = Backend::spawn("b1");
    let lb = start(&[backend.url()], &[]);
    run(async {
        let mut c = Client::connect(lb.addr()).await;
        // Unary failure: tonic answers trailers-only.
        let req = EchoRequest { fail_code: Code::NotFound as i32, ..Default::default() };
        let status = c.unary(tonic::Request::new(req)).await.unwrap_err();
        assert_eq!(status.code(), Code::NotFound);
        assert_eq!(status.message(), "requested failure");
        assert_eq!(status.metadata().get("x-custom").unwrap(), "custom-value");
        assert_eq!(
            status.metadata().get_bin("x-detail-bin").unwrap().to_bytes().unwrap().as_ref(),
            &[0, 1, 2, 255]
        );
        // Failure after two messages: the status travels in real trailers.
        let req = EchoRequest {
            count: 2,
            fail_code: Code::FailedPrecondition as i32,
            ..Default::default()
        };
        let mut stream = c.server_stream(req).await.unwrap();
        assert_eq!(stream.message().await.unwrap().unwrap().seq, 0);
        assert_eq!(stream.message().await.unwrap().unwrap().seq, 1);
        let status = stream.message().await.unwrap_err();
        assert_eq!(status.code(), Code::FailedPrecondition);
        assert_eq!(status.metadata().get("x-custom").unwrap(), "custom-value");
        assert_eq!(
            status.metadata().get_bin("x-detail-bin").unwrap().to_bytes().unwrap().as_ref(),
            &[0, 1, 2, 255]
        );
    });
}

#[test]
fn sixteen_mib_messages_both_ways() {
    let backend = Backend::spawn("b1");
    let lb = start(&[backend.url()], &[]);
    run(async {
        let mut c = Client::connect(lb.addr()).await;
        let payload: Vec<u8> = (0..16u32 << 20).map(|i| (i * 7 + i / 251) as u8).collect();
        let req = EchoRequest { payload: payload.clone(), ..Default::default() };
        let reply = c.unary(tonic::Request::new(req)).await.unwrap().into_inner();
        assert!(reply.payload == payload, "16 MiB payload corrupted");
        // Several at once over the same connection.
        let mut calls = Vec::new();
        for _ in 0..3 {
            let mut c = c.clone();
            let payload = payload.clone();
            calls.push(tokio::spawn(async move {
                let req = EchoRequest { payload: payload.clone(), ..Default::default() };
                let reply = c.unary(tonic::Request::new(req)).await.unwrap().into_inner();
                reply.payload == payload
            }));
        }
        for call in calls {
            assert!(call.await.unwrap());
        }
    });
}

#[test]
fn cancellation_reaches_the_backend() {
    let backend = Backend::spawn("b1");
    let lb = start(&[backend.url()], &[]);
    run(async {
        let c = Client::connect(lb.addr()).await;
        // A unary call the backend holds: the client gives up, the handler must be dropped.
        let mut c1 = c.clone();
        let call = tokio::spawn(async move {
            let req = EchoRequest { delay_ms: 30_000, ..Default::default() };
            let _ = c1.unary(tonic::Request::new(req)).await;
        });
        wait_for(|| backend.calls() == 1).await;
        call.abort();
        wait_for(|| backend.cancelled() == 1).await;

        // A server stream the client drops after two messages.
        let mut c2 = c.clone();
        let req = EchoRequest { count: 100_000, delay_ms: 5, ..Default::default() };
        let mut stream = c2.server_stream(req).await.unwrap();
        stream.message().await.unwrap().unwrap();
        stream.message().await.unwrap().unwrap();
        drop(stream);
        wait_for(|| backend.cancelled() == 2).await;
    });
}

/// An h2c backend that accepts every stream and never answers. Unlike tonic, it does not
/// enforce `grpc-timeout` itself (tonic answers CANCELLED at the same instant Fulcrum's own
/// deadline fires, a race), so a deadline can only come from Fulcrum. Counts the streams the
/// peer reset.
struct SilentBackend {
    addr: SocketAddr,
    resets: Arc<std::sync::atomic::AtomicU64>,
    _stop: tokio::sync::oneshot::Sender<()>,
}

impl SilentBackend {
    fn spawn() -> Self {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let resets = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let counter = resets.clone();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).unwrap();
                let serve = async {
                    while let Ok((tcp, _)) = listener.accept().await {
                        tokio::spawn(Self::connection(tcp, counter.clone()));
                    }
                };
                tokio::select! {
                    _ = serve => {}
                    _ = stopped => {}
                }
            });
            rt.shutdown_background();
        });
        Self { addr, resets, _stop: stop }
    }

    /// Holds every stream open, unanswered, until the peer resets it.
    async fn connection(tcp: tokio::net::TcpStream, resets: Arc<std::sync::atomic::AtomicU64>) {
        let Ok(mut conn) = h2::server::handshake(tcp).await else { return };
        while let Some(Ok((_request, mut respond))) = conn.accept().await {
            let resets = resets.clone();
            tokio::spawn(async move {
                if std::future::poll_fn(|cx| respond.poll_reset(cx)).await.is_ok() {
                    resets.fetch_add(1, SeqCst);
                }
            });
        }
    }

    fn url(&self) -> String {
        format!("h2c://{}", self.addr)
    }
}

#[test]
fn grpc_timeout_is_the_upstream_deadline() {
    let backend = SilentBackend::spawn();
    let lb = start(&[backend.url()], &[]);
    run(async {
        let req = EchoRequest { message: "late".into(), ..Default::default() };
        let Answer { status, headers, trailers, elapsed: took } =
            grpc_call(lb.addr(), "/echo.Echo/Unary", &[("grpc-timeout", "300m")], framed(&req))
                .await;
        // Fulcrum's own trailers-only answer: HTTP 200, DEADLINE_EXCEEDED.
        assert_eq!(status, 200);
        assert!(trailers.is_none(), "{trailers:?}");
        assert_eq!(headers.get("grpc-status").unwrap(), "4", "{headers:?}");
        assert_eq!(headers.get("grpc-message").unwrap(), "deadline exceeded");
        assert!(took >= Duration::from_millis(250) && took < Duration::from_secs(5), "{took:?}");
        // The backend saw the call cancelled (RST_STREAM).
        wait_for(|| backend.resets.load(SeqCst) == 1).await;
    });
}

#[test]
fn a_tonic_backend_given_the_deadline_ends_the_call_in_time() {
    // Fulcrum forwards `grpc-timeout`, so tonic enforces it too; whichever side fires first
    // answers (Fulcrum: DEADLINE_EXCEEDED; tonic's own timeout: CANCELLED). Either way the
    // call ends at the deadline, the backend's handler is cancelled and the connection works on.
    let backend = Backend::spawn("b1");
    let lb = start(&[backend.url()], &[]);
    run(async {
        let req = EchoRequest { delay_ms: 10_000, ..Default::default() };
        let Answer { status, headers, trailers, elapsed: took } =
            grpc_call(lb.addr(), "/echo.Echo/Unary", &[("grpc-timeout", "300m")], framed(&req))
                .await;
        assert_eq!(status, 200);
        let grpc_status = headers
            .get("grpc-status")
            .or_else(|| trailers.as_ref().and_then(|t| t.get("grpc-status")))
            .map(|v| v.to_str().unwrap().to_owned());
        assert!(matches!(grpc_status.as_deref(), Some("4" | "1")), "{headers:?} {trailers:?}");
        assert!(took >= Duration::from_millis(250) && took < Duration::from_secs(5), "{took:?}");
        wait_for(|| backend.cancelled() == 1).await;
        let mut c = Client::connect(lb.addr()).await;
        assert_eq!(c.say("after").await.unwrap().message, "after");
    });
}

#[test]
fn a_backend_killed_mid_stream_fails_the_call_cleanly_and_the_survivor_takes_over() {
    let mut backends = [Backend::spawn("b1"), Backend::spawn("b2")];
    let urls: Vec<String> = backends.iter().map(Backend::url).collect();
    let lb = start(&urls, &["--algorithm", "round_robin"]);
    run(async {
        let mut c = Client::connect(lb.addr()).await;
        let req = EchoRequest { count: 100_000, delay_ms: 5, ..Default::default() };
        let mut stream = c.server_stream(req).await.unwrap();
        let first = stream.message().await.unwrap().unwrap();
        let (victim, survivor) = if first.backend == "b1" { (0, "b2") } else { (1, "b1") };
        backends[victim].kill();
        let status = loop {
            match stream.message().await {
                Ok(Some(_)) => continue,
                Ok(None) => panic!("stream ended cleanly after its backend died"),
                Err(status) => break status,
            }
        };
        assert_eq!(status.code(), Code::Unavailable, "{status:?}");
        for i in 0..10 {
            let reply = c.say(&format!("after{i}")).await.unwrap();
            assert_eq!(reply.backend, survivor);
        }
    });
}

#[test]
fn no_backend_is_unavailable() {
    let lb = start(&[], &[]);
    let http1 = TestBackend::named("h1");
    // gRPC never goes to an HTTP/1.1 backend.
    let lb_h1_only = start(&[http1.url()], &[]);
    run(async {
        for addr in [lb.addr(), lb_h1_only.addr()] {
            let mut c = Client::connect(addr).await;
            let status = c.say("x").await.unwrap_err();
            assert_eq!(status.code(), Code::Unavailable, "{status:?}");
            assert_eq!(status.message(), "no backend available");
        }
    });
    assert_eq!(http1.requests(), 0);
}

#[test]
fn calls_from_one_connection_spread_round_robin_over_three_backends() {
    let backends = [Backend::spawn("b1"), Backend::spawn("b2"), Backend::spawn("b3")];
    let urls: Vec<String> = backends.iter().map(Backend::url).collect();
    let lb = start(&urls, &["--algorithm", "round_robin"]);
    run(async {
        let c = Client::connect(lb.addr()).await;
        // 300 calls, 30 at a time, over the one connection.
        let mut tasks = Vec::new();
        for t in 0..30 {
            let mut c = c.clone();
            tasks.push(tokio::spawn(async move {
                let mut seen = Vec::new();
                for i in 0..10 {
                    seen.push(c.say(&format!("{t}-{i}")).await.unwrap().backend);
                }
                seen
            }));
        }
        let mut tally: HashMap<String, usize> = HashMap::new();
        for t in tasks {
            for b in t.await.unwrap() {
                *tally.entry(b).or_default() += 1;
            }
        }
        assert_eq!(tally.len(), 3, "{tally:?}");
        assert!(tally.values().all(|&n| n == 100), "{tally:?}");
    });
    for b in &backends {
        assert_eq!(b.calls(), 100);
    }
}

#[test]
fn http1_and_http2_clients_share_the_port() {
    let grpc_backend = Backend::spawn("g1");
    let http1 = TestBackend::named("h1");
    let lb = start(&[grpc_backend.url(), http1.url()], &["--algorithm", "round_robin"]);
    let addr = lb.addr();
    // HTTP/1.1 clients on threads while gRPC calls run.
    let h1_clients: Vec<_> = (0..4)
        .map(|_| {
            std::thread::spawn(move || {
                for _ in 0..25 {
                    let res = common::get_once(addr, "/plain").unwrap();
                    assert_eq!(res.status(), 200);
                    assert_eq!(res.backend(), "h1");
                }
            })
        })
        .collect();
    run(async {
        let channel =
            Endpoint::from_shared(format!("http://{addr}")).unwrap().connect().await.unwrap();
        let mut c = Client::over(channel.clone());
        for i in 0..50 {
            assert_eq!(c.say(&format!("{i}")).await.unwrap().backend, "g1");
        }
        // A plain HTTP/2 request may go to the HTTP/1.1 backend: it is translated.
        let mut plain = 0;
        for _ in 0..6 {
            use tonic::codegen::Service;
            let mut ch = channel.clone();
            let req = tonic::codegen::http::Request::get(format!("http://{addr}/plain"))
                .body(tonic::body::Body::empty())
                .unwrap();
            std::future::poll_fn(|cx| ch.poll_ready(cx)).await.unwrap();
            let res = ch.call(req).await.unwrap();
            if res.headers().get("x-backend").is_some_and(|v| v == "h1") {
                assert_eq!(res.status(), 200);
                let body =
                    http_body_util::BodyExt::collect(res.into_body()).await.unwrap().to_bytes();
                assert_eq!(&body[..], b"h1");
                plain += 1;
            }
        }
        assert!(plain >= 1, "no plain HTTP/2 request reached the HTTP/1.1 backend");
    });
    for t in h1_clients {
        t.join().unwrap();
    }
    assert_eq!(grpc_backend.calls(), 50);
}

/// Polls `cond` every 5 ms on the runtime, up to 10 s.
async fn wait_for(mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !cond() {
        assert!(Instant::now() < deadline, "condition not reached within 10 s");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}
