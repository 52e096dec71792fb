//! The hand-over to the hyperium-h2 path, run by the worker thread that owns the connection.
//!
//! h2 runs over monoio's poll-io layer, whose traits are tokio's `AsyncRead`/`AsyncWrite`. The
//! handshake always runs on the owned-buffer [`TlsStream`] (only its ALPN result says whether
//! the connection is HTTP/2); [`TlsStream::into_poll_io`] then moves the socket to the poll-io
//! layer and keeps the same rustls connection, with every byte it already read, processed or
//! not. (A handshake by tokio-rustls would need the choice of layer before the handshake, and
//! a second TLS adaptor.)

use std::io::{self, BufRead, Write};
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use monoio::io::IntoPollIo;
use monoio::io::poll_io::{AsyncRead, AsyncWrite, ReadBuf};
use monoio::net::TcpStream;
use monoio::net::tcp::stream_poll::TcpStreamPoll;
use rustls::Connection;

use crate::stream::{SessionInfo, StreamError, TlsStream, WRITE_CHUNK};

/// Why a [`TlsStream`] could not be moved to the poll-io layer (the connection is closed).
#[derive(Debug, thiserror::Error)]
pub enum IntoPollError {
    /// A read or write of an earlier, cancelled call is still in flight.
    #[error("a socket operation of the TLS stream is still in flight")]
    InFlight,
    /// monoio could not move the socket to the poll-io layer.
    #[error("moving the socket to the poll-io layer: {0}")]
    PollIo(io::Error),
}

impl TlsStream<TcpStream> {
    /// Moves a TLS connection whose handshake is done (ALPN `h2`, typically) to the poll-io
    /// layer for hyperium `h2`: the socket becomes a `TcpStreamPoll`, and the rustls state,
    /// buffered plaintext and ciphertext read but not yet processed come along.
    pub fn into_poll_io(self) -> Result<PollTlsStream, IntoPollError> {
        let parts = self.into_parts().ok_or(IntoPollError::InFlight)?;
        let io = parts.io.into_poll_io().map_err(IntoPollError::PollIo)?;
        Ok(PollTlsStream::new(io, parts.conn, &parts.cipher, parts.read_size, parts.info))
    }
}

/// A TLS connection over a poll-io (tokio-style) socket: what hyperium `h2` runs on.
///
/// Same contract as [`TlsStream`]: end of stream only after `close_notify` (else an
/// `UnexpectedEof` error, [`StreamError::Truncated`]), `poll_shutdown` sends `close_notify`.
/// Writes are taken into rustls (at most 64 KiB of records pending) and go out as the socket
/// accepts them; `poll_flush` waits until all are out.
pub struct PollTlsStream<T = TcpStreamPoll> {
    io: T,
    conn: Connection,
    /// Ciphertext read from the socket: `cipher[start..end]` is not yet given to rustls.
    cipher: Vec<u8>,
    start: usize,
    end: usize,
    eof: bool,
    close_sent: bool,
    info: SessionInfo,
}

impl<T: AsyncRead + AsyncWrite + Unpin> PollTlsStream<T> {
    /// Wraps a socket and a rustls connection; `unprocessed` is ciphertext already read from
    /// the socket and not given to rustls yet; reads bring at most `read_size` bytes.
    fn new(
        io: T,
        conn: Connection,
        unprocessed: &[u8],
        read_size: usize,
        info: SessionInfo,
    ) -> Self {
        let mut cipher = vec![0; read_size.max(unprocessed.len())];
        cipher[..unprocessed.len()].copy_from_slice(unprocessed);
        Self {
            io,
            conn,
            cipher,
            start: 0,
            end: unprocessed.len(),
            eof: false,
            close_sent: false,
            info,
        }
    }

    /// What the handshake settled.
    pub fn info(&self) -> &SessionInfo {
        &self.info
    }

    /// Writes queued TLS records until none is left or the socket would block.
    fn poll_drain(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.conn.wants_write() {
            let mut socket = SyncWriter { io: Pin::new(&mut self.io), cx };
            match self.conn.write_tls(&mut socket) {
                Ok(0) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Poll::Pending,
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
        Poll::Ready(Ok(()))
    }

    /// Gives buffered ciphertext to rustls and processes it; a TLS error's alert is sent on a
    /// best-effort basis.
    fn feed(&mut self, cx: &mut Context<'_>) -> io::Result<()> {
        let mut rest = &self.cipher[self.start..self.end];
        let n = self.conn.read_tls(&mut rest)?;
        // Zero: a close_notify was received and rustls takes nothing more.
        self.start = if n == 0 { self.end } else { self.start + n };
        let processed = self.conn.process_new_packets();
        // Alerts and KeyUpdate answers go out now if the socket takes them.
        if let Poll::Ready(Err(e)) = self.poll_drain(cx) {
            processed.map_err(|tls| StreamError::Tls(tls).into_io())?;
            return Err(e);
        }
        processed.map(drop).map_err(|tls| StreamError::Tls(tls).into_io())
    }
}

impl<T: AsyncRead + AsyncWrite + Unpin> AsyncRead for PollTlsStream<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if buf.remaining() == 0 {
            return Poll::Ready(Ok(()));
        }
        loop {
            let mut reader = this.conn.reader();
            match reader.fill_buf() {
                Ok(chunk) if !chunk.is_empty() => {
                    let n = chunk.len().min(buf.remaining());
                    buf.put_slice(&chunk[..n]);
                    reader.consume(n);
                    return Poll::Ready(Ok(()));
                }
                // close_notify received: clean end of stream.
                Ok(_) => return Poll::Ready(Ok(())),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
                    return Poll::Ready(Err(StreamError::Truncated.into_io()));
                }
                Err(e) => return Poll::Ready(Err(e)),
            }
            if this.start < this.end {
                this.feed(cx)?;
                continue;
            }
            if this.eof {
                return Poll::Ready(Err(StreamError::Truncated.into_io()));
            }
            let mut space = ReadBuf::new(&mut this.cipher);
            ready!(Pin::new(&mut this.io).poll_read(cx, &mut space))?;
            let n = space.filled().len();
            (this.start, this.end) = (0, n);
            if n == 0 {
                this.eof = true;
                this.conn.read_tls(&mut &[][..])?;
                this.conn.process_new_packets().map_err(|e| StreamError::Tls(e).into_io())?;
            }
        }
    }
}

impl<T: AsyncRead + AsyncWrite + Unpin> AsyncWrite for PollTlsStream<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.close_sent {
            return Poll::Ready(Err(StreamError::Closed.into_io()));
        }
        // Records still queued go first: at most one chunk of plaintext is ever pending.
        ready!(this.poll_drain(cx))?;
        let n = this.conn.writer().write(&data[..data.len().min(WRITE_CHUNK)])?;
        // Start sending; the rest goes out on the next write or flush.
        if let Poll::Ready(Err(e)) = this.poll_drain(cx) {
            return Poll::Ready(Err(e));
        }
        Poll::Ready(Ok(n))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_drain(cx))?;
        Pin::new(&mut this.io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if !this.close_sent {
            this.conn.send_close_notify();
            this.close_sent = true;
        }
        ready!(this.poll_drain(cx))?;
        match ready!(Pin::new(&mut this.io).poll_shutdown(cx)) {
            // The peer has already closed the connection: nothing more can reach it.
            Err(e) if e.kind() == io::ErrorKind::NotConnected => Poll::Ready(Ok(())),
            other => Poll::Ready(other),
        }
    }
}

impl<T> std::fmt::Debug for PollTlsStream<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PollTlsStream").field("info", &self.info).finish_non_exhaustive()
    }
}

/// `io::Write` over a poll-io socket for rustls's `write_tls`: `Pending` becomes `WouldBlock`.
struct SyncWriter<'a, 'b, T> {
    io: Pin<&'a mut T>,
    cx: &'a mut Context<'b>,
}

impl<T: AsyncWrite> Write for SyncWriter<'_, '_, T> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self.io.as_mut().poll_write(self.cx, buf) {
            Poll::Ready(result) => result,
            Poll::Pending => Err(io::ErrorKind::WouldBlock.into()),
        }
    }

    fn write_vectored(&mut self, bufs: &[io::IoSlice<'_>]) -> io::Result<usize> {
        match self.io.as_mut().poll_write_vectored(self.cx, bufs) {
            Poll::Ready(result) => result,
            Poll::Pending => Err(io::ErrorKind::WouldBlock.into()),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}
