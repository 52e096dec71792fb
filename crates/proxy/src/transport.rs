//! The transports under the HTTP paths: a connection is plain TCP or TLS, on the client side
//! and on the backend side alike. [`ConnRead`] and [`ConnWrite`] are its two halves (so a
//! request body and a response flow at once); both implement monoio's owned-buffer IO traits,
//! so the HTTP/1.1 codec and the body copy loop run over either without knowing which. Runs on
//! the worker that owns the connection.

use fulcrum_tls::{SessionInfo, TlsReadHalf, TlsStream, TlsWriteHalf};
use fulcrum_util::SendNow;
use monoio::BufResult;
use monoio::buf::{IoBuf, IoBufMut, IoVecBuf, IoVecBufMut};
use monoio::io::{AsyncReadRent, AsyncWriteRent, Splitable};
use monoio::net::TcpStream;
use monoio::net::tcp::{TcpOwnedReadHalf, TcpOwnedWriteHalf};

/// The reading half of a connection.
pub enum ConnRead {
    /// Plain TCP.
    Tcp(TcpOwnedReadHalf),
    /// TLS over TCP.
    Tls(TlsReadHalf<TcpStream>),
}

/// The writing half of a connection.
pub enum ConnWrite {
    /// Plain TCP, with its socket's descriptor for [`ConnWrite::send_now`].
    Tcp(TcpOwnedWriteHalf, SendNow),
    /// TLS over TCP.
    Tls(TlsWriteHalf<TcpStream>),
}

/// Splits a plain TCP connection.
pub fn split_tcp(stream: TcpStream) -> (ConnRead, ConnWrite) {
    let direct = SendNow::of(&stream);
    let (r, w) = stream.into_split();
    (ConnRead::Tcp(r), ConnWrite::Tcp(w, direct))
}

/// Splits a TLS connection.
pub fn split_tls(stream: TlsStream<TcpStream>) -> (ConnRead, ConnWrite) {
    let (r, w) = stream.into_split();
    (ConnRead::Tls(r), ConnWrite::Tls(w))
}

impl AsyncReadRent for ConnRead {
    async fn read<T: IoBufMut>(&mut self, buf: T) -> BufResult<usize, T> {
        match self {
            ConnRead::Tcp(r) => r.read(buf).await,
            ConnRead::Tls(r) => r.read(buf).await,
        }
    }

    async fn readv<T: IoVecBufMut>(&mut self, buf: T) -> BufResult<usize, T> {
        match self {
            ConnRead::Tcp(r) => r.readv(buf).await,
            ConnRead::Tls(r) => r.readv(buf).await,
        }
    }
}

impl ConnWrite {
    /// Sends what the socket takes of `bytes` now, without the runtime's driver (see
    /// [`SendNow::send`]): on io_uring, a write that fits costs no ring operation and no
    /// wake-up of the task. Returns how many bytes went: 0 when the socket is full, and always
    /// 0 over TLS, whose records go through [`AsyncWriteRent::write`]. Only with no other
    /// write in flight on this connection.
    pub fn send_now(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        match self {
            ConnWrite::Tcp(_, direct) => direct.send(bytes),
            ConnWrite::Tls(_) => Ok(0),
        }
    }
}

impl AsyncWriteRent for ConnWrite {
    async fn write<T: IoBuf>(&mut self, buf: T) -> BufResult<usize, T> {
        match self {
            ConnWrite::Tcp(w, _) => w.write(buf).await,
            ConnWrite::Tls(w) => w.write(buf).await,
        }
    }

    async fn writev<T: IoVecBuf>(&mut self, buf: T) -> BufResult<usize, T> {
        match self {
            ConnWrite::Tcp(w, _) => w.writev(buf).await,
            ConnWrite::Tls(w) => w.writev(buf).await,
        }
    }

    async fn flush(&mut self) -> std::io::Result<()> {
        match self {
            ConnWrite::Tcp(w, _) => w.flush().await,
            ConnWrite::Tls(w) => w.flush().await,
        }
    }

    async fn shutdown(&mut self) -> std::io::Result<()> {
        match self {
            ConnWrite::Tcp(w, _) => w.shutdown().await,
            ConnWrite::Tls(w) => w.shutdown().await,
        }
    }
}

/// What a client connection is: the scheme it came in with and, over TLS, its session.
#[derive(Debug, Clone, Default)]
pub struct ConnInfo {
    /// The TLS session, `None` for cleartext.
    pub tls: Option<SessionInfo>,
}

impl ConnInfo {
    /// `https` over TLS, `http` otherwise (`X-Forwarded-Proto`).
    pub fn proto(&self) -> &'static str {
        if self.tls.is_some() { "https" } else { "http" }
    }

    /// The TLS version as the access log names it (`TLSv1.3`), if over TLS.
    pub fn tls_version(&self) -> Option<&'static str> {
        use fulcrum_tls::rustls::ProtocolVersion;
        Some(match self.tls.as_ref()?.version? {
            ProtocolVersion::TLSv1_3 => "TLSv1.3",
            ProtocolVersion::TLSv1_2 => "TLSv1.2",
            _ => "other",
        })
    }

    /// The server name the client asked for, if over TLS with SNI.
    pub fn sni(&self) -> Option<&str> {
        self.tls.as_ref()?.sni.as_deref()
    }
}
