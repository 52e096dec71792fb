//! WebSocket over HTTP/2 (RFC 8441) on the hyperium `h2` engine: once the HTTP/1.1 backend
//! switched to WebSocket (`crate::h2call` sends the upgrade and checks the `101` with
//! [`crate::websocket`], for both engines), the stream's DATA frames and the backend
//! connection's bytes become the two directions of a tunnel ([`crate::tunnel`]). The frames
//! inside are the client's and the backend's own, passed through unchanged. Runs in the
//! stream's task on the worker's thread.

use bytes::Bytes;
use fulcrum_util::ReadBuf;
use h2::{RecvStream, SendStream};
use monoio::io::{AsyncWriteRent, AsyncWriteRentExt};

use super::stream::send_data;
use crate::transport::ConnWrite;
use crate::tunnel::{Direction, Flow, Tunnel};
use crate::upstream::UpstreamRead;

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
    r: &mut UpstreamRead,
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
        match r.fill(buf).await {
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
