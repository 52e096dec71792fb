//! WebSocket over HTTP/2 (RFC 8441): an extended CONNECT stream (`:protocol = websocket`)
//! goes to an HTTP/1.1 backend as a WebSocket upgrade (`GET` with `Upgrade: websocket` and a
//! `Sec-WebSocket-Key` of Fulcrum's own, which HTTP/2 does not carry), the backend's `101` is
//! checked (`Sec-WebSocket-Accept` must match that key) and answered to the client with `200`,
//! and the stream's DATA frames and the backend connection's bytes become the two directions
//! of a tunnel ([`crate::tunnel`]). The handshake itself is [`crate::websocket`]'s, shared
//! with the native engine. The frames inside are the client's and the backend's own,
//! passed through unchanged. Runs in the stream's task on the worker's thread.

use bytes::Bytes;
use fulcrum_http::h1::BackendResponse;
use fulcrum_util::ReadBuf;
use h2::{RecvStream, SendStream};
use monoio::io::{AsyncWriteRent, AsyncWriteRentExt};

use super::stream::send_data;
use crate::transport::{ConnRead, ConnWrite};
use crate::tunnel::{Direction, Flow, Tunnel};

/// The `200` for the client: the backend's end-to-end fields (`Sec-WebSocket-Protocol`,
/// `Sec-WebSocket-Extensions`, ...) without the HTTP/1.1-only `Sec-WebSocket-Accept`.
pub(super) fn client_head(res: &BackendResponse<'_>) -> Option<http::Response<()>> {
    let mut head = res.to_h2().ok()?;
    *head.status_mut() = http::StatusCode::OK;
    head.headers_mut().remove("sec-websocket-accept");
    Some(head)
}

/// Client to backend: each DATA chunk written to the backend connection, its flow-control
/// capacity given back once written; END_STREAM half-closes the backend connection.
pub(super) async fn up(tunnel: &Tunnel<'_>, body: &mut RecvStream, w: &mut ConnWrite) -> Flow {
    loop {
        let chunk = match body.data().await {
            Some(Ok(chunk)) => chunk,
            Some(Err(_)) => return Flow::Broken,
            None => {
                let _ = w.shutdown().await;
                return Flow::Ended;
            }
        };
        tunnel.touch();
        let n = chunk.len();
        let (written, _) = w.write_all(chunk).await;
        if written.is_err() {
            return Flow::Broken;
        }
        let _ = body.flow_control().release_capacity(n);
        tunnel.moved(Direction::Up, n);
    }
}

/// Backend to client: what the connection already holds, then everything it sends, as DATA
/// under the client's flow control; its end becomes END_STREAM.
pub(super) async fn down(
    tunnel: &Tunnel<'_>,
    r: &mut ConnRead,
    buf: &mut ReadBuf,
    d: &mut SendStream<Bytes>,
) -> Flow {
    loop {
        let n = buf.len();
        if n > 0 {
            let chunk = Bytes::copy_from_slice(buf.data());
            buf.consume(n);
            if send_data(d, chunk, false).await.is_err() {
                return Flow::Broken;
            }
            tunnel.moved(Direction::Down, n);
        }
        match buf.fill(r).await {
            Ok(0) => {
                return if d.send_data(Bytes::new(), true).is_ok() {
                    Flow::Ended
                } else {
                    Flow::Broken
                };
            }
            Ok(_) => tunnel.touch(),
            Err(_) => return Flow::Broken,
        }
    }
}
