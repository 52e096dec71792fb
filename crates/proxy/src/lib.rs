//! Fulcrum's data path, run by every worker on its own thread: the client connection loops for
//! HTTP/1.1 ([`h1`]) and HTTP/2 ([`h2`] on hyperium `h2`, or [`h2n`] on Fulcrum's own engine,
//! as `[http2] engine` says, with what both share written once in `h2call`), the one attempt
//! loop every request goes through whatever the client's and the backend's protocol
//! (`attempt`), the worker's view of each backend with its connection pools and HTTP/2
//! sessions ([`upstream`]), the worker's response cache ([`worker_cache`]), and the metrics
//! and access records of each exchange.
//!
//! ```text
//! accept -> serve_connection -> HTTP/2 preface? -> h2::server  -> one task per stream ┐
//!                                                   (or h2n::server, engine = native)  │
//!                             -> otherwise      -> h1::serve  -> one exchange at a time┤
//!                                                                                      v
//!     pin the epoch -> route to a pool -> (cache lookup) -> attempt loop: pick in the pool,
//!     acquire, send one attempt, classify the failure, retry within the budget -> stream the
//!     response back -> log
//! ```
//!
//! A new client protocol supplies its "send one attempt" step (`attempt::Forward`); a new
//! backend protocol, its way to acquire a connection or stream in [`upstream`].

mod attempt;
mod ctx;
mod error;
mod exchange;
mod h1;
mod h2;
mod h2call;
mod h2conn;
mod h2n;
mod metrics;
mod retry;
mod route;
mod transport;
mod tunnel;
mod upstream;
mod websocket;
mod worker_cache;

use std::net::SocketAddr;
use std::rc::Rc;

use bytes::Bytes;
use fulcrum_config::Http2Engine;
use fulcrum_tls::AppProtocol;
use fulcrum_util::{ReadBuf, Rewind};
use monoio::net::TcpStream;
use monoio::time::timeout;

pub use ctx::{ConnectionSlot, HandshakeSlot, Shared, WorkerCtx, WorkerEpoch, WorkerPool};
pub use error::{ProxyError, QueueError, Side};
pub use exchange::{Target, WorkerTelemetrySpec};
pub use metrics::{PoolMetrics, ProxyMetrics};
pub use transport::ConnInfo;
pub use tunnel::{TunnelEnd, TunnelMetrics, TunnelReport};
pub use upstream::UpstreamTls;

/// Serves one client connection until it closes, errs, or the worker drains. `_slot` counts it
/// against `limits.max_connections_per_worker` until then. (Taking it here, rather than in a
/// wrapping block, keeps the spawned task one state machine: a block that awaits this future
/// would store it twice.)
///
/// The first read decides the protocol: an HTTP/2 preface hands the connection to the HTTP/2
/// server, anything else is HTTP/1.1, which pays one compare of at most 24 bytes for it.
pub async fn serve_connection(
    ctx: Rc<WorkerCtx>,
    mut stream: TcpStream,
    peer: SocketAddr,
    _slot: ConnectionSlot,
) {
    let _ = stream.set_nodelay(true);
    let mut buf = ReadBuf::with_capacity(ctx.limits.buffer_bytes);
    let idle = ctx.current_epoch().epoch.timeouts.client_idle();
    loop {
        match timeout(idle, buf.fill(&mut stream)).await {
            Ok(Ok(n)) if n > 0 => {}
            _ => return,
        }
        let data = buf.data();
        let n = data.len().min(h2::PREFACE.len());
        if data[..n] != h2::PREFACE[..n] {
            break;
        }
        if n == h2::PREFACE.len() {
            if ctx.http2.engine == Http2Engine::Native {
                let halves = transport::split_tcp(stream);
                return h2n::server::serve(ctx, halves, buf, peer, ConnInfo::default()).await;
            }
            let pre = Bytes::copy_from_slice(data);
            let Ok(io) = Rewind::new(stream, pre) else { return };
            return h2::server::serve(ctx, io, peer, ConnInfo::default()).await;
        }
        // A strict prefix of the preface: read on (rare; a real HTTP/1.1 head never matches).
    }
    let client = h1::ClientConn::new(transport::split_tcp(stream), buf);
    h1::serve(&ctx, client, peer, &ConnInfo::default()).await;
}

/// Serves one client connection on the TLS listener: the handshake (within
/// `tls.handshake_timeout_ms`, counted in `_handshake` against
/// `tls.max_handshakes_per_worker` until it ends), then HTTP/2 when ALPN chose `h2` and
/// HTTP/1.1 otherwise, until it closes, errs, or the worker drains.
pub async fn serve_tls_connection(
    ctx: Rc<WorkerCtx>,
    stream: TcpStream,
    peer: SocketAddr,
    _slot: ConnectionSlot,
    handshake: HandshakeSlot,
) {
    let _ = stream.set_nodelay(true);
    let Some(stream) = ctx.tls_handshake(stream, handshake).await else { return };
    let info = ConnInfo { tls: Some(stream.info().clone()) };
    if stream.info().alpn == Some(AppProtocol::H2) {
        if ctx.http2.engine == Http2Engine::Native {
            let buf = ReadBuf::with_capacity(ctx.limits.buffer_bytes);
            return h2n::server::serve(ctx, transport::split_tls(stream), buf, peer, info).await;
        }
        let Ok(io) = stream.into_poll_io() else { return };
        return h2::server::serve(ctx, io, peer, info).await;
    }
    let buf = ReadBuf::with_capacity(ctx.limits.buffer_bytes);
    let client = h1::ClientConn::new(transport::split_tls(stream), buf);
    h1::serve(&ctx, client, peer, &info).await;
}
