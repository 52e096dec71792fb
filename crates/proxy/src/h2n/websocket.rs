//! WebSocket over HTTP/2 (RFC 8441) on the native engine: once the HTTP/1.1 backend switched
//! to WebSocket (`crate::h2call` sends the upgrade and checks the `101` with
//! [`crate::websocket`], for both engines), the client's extended CONNECT stream and the
//! backend connection are the two directions of a tunnel ([`crate::tunnel`]), which counts,
//! bounds and logs it as it does every tunnel. The frames inside are the client's and the
//! backend's own, passed through unchanged. Runs in the stream's task on the worker's thread.

use std::future::poll_fn;

use fulcrum_h2::StreamId;
use fulcrum_util::ReadBuf;
use monoio::buf::IoBuf;
use monoio::io::{AsyncReadRent, AsyncWriteRent, AsyncWriteRentExt};

use super::stream::CHUNK;
use crate::h2conn::{H2Conn, Incoming};
use crate::transport::{ConnRead, ConnWrite};
use crate::tunnel::{Direction, Flow, Tunnel};
use crate::upstream::UpstreamRead;

/// Client to backend: the stream's DATA written to the backend connection (its credit goes
/// back to the client as it is taken, at most [`CHUNK`] ahead of the write); END_STREAM (or
/// trailers, which a tunnel has no use for) half-closes the backend connection.
pub(super) async fn up(
    tunnel: &Tunnel<'_>,
    client: &H2Conn,
    id: StreamId,
    w: &mut ConnWrite,
) -> Flow {
    let mut chunk = Vec::with_capacity(CHUNK);
    loop {
        match poll_fn(|cx| client.poll_incoming(id, cx)).await {
            Incoming::Data => {}
            Incoming::End | Incoming::Trailers(_) => {
                let _ = w.shutdown().await;
                return Flow::Ended;
            }
            Incoming::Reset(..) | Incoming::Lost => return Flow::Broken,
        }
        tunnel.touch();
        chunk.clear();
        let n = client.take_data(id, &mut chunk, CHUNK);
        // What the socket takes at once goes without the driver (as in `tunnel::copy`).
        let Ok(sent) = w.send_now(&chunk) else {
            return Flow::Broken;
        };
        if sent < chunk.len() {
            let (written, back) = w.write_all(chunk.slice(sent..)).await;
            chunk = back.into_inner();
            if written.is_err() {
                return Flow::Broken;
            }
        }
        tunnel.moved(Direction::Up, n);
    }
}

/// Backend to client: what the connection already holds past the `101`, then everything it
/// sends, as DATA under the client's flow control; its end becomes END_STREAM. The transport
/// is matched once, as in `tunnel::copy`; a half still owned by an armed read is broken.
pub(super) async fn down(
    tunnel: &Tunnel<'_>,
    r: &mut UpstreamRead,
    buf: &mut ReadBuf,
    client: &H2Conn,
    id: StreamId,
) -> Flow {
    match r.half() {
        Some(ConnRead::Tcp(r)) => pump_down(tunnel, r, buf, client, id).await,
        Some(ConnRead::Tls(r)) => pump_down(tunnel, r, buf, client, id).await,
        None => Flow::Broken,
    }
}

/// [`down`]'s loop over one transport's reading half.
async fn pump_down<R: AsyncReadRent>(
    tunnel: &Tunnel<'_>,
    r: &mut R,
    buf: &mut ReadBuf,
    client: &H2Conn,
    id: StreamId,
) -> Flow {
    loop {
        let n = buf.len();
        if n > 0 {
            if client.send_all(id, buf.data(), false).await.is_err() {
                return Flow::Broken;
            }
            buf.consume(n);
            tunnel.moved(Direction::Down, n);
        }
        match buf.fill(r).await {
            Ok(0) => {
                return match client.send_all(id, &[], true).await {
                    Ok(()) => Flow::Ended,
                    Err(_) => Flow::Broken,
                };
            }
            Ok(_) => tunnel.touch(),
            Err(_) => return Flow::Broken,
        }
    }
}
