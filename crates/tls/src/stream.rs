//! [`TlsStream`]: rustls over monoio's owned-buffer IO, run by the worker thread that owns the
//! connection (everything here is `!Send`: one monoio runtime drives it).
//!
//! The socket is split at construction (monoio's [`Split`]) so the read and the write direction
//! never wait on each other; the rustls connection and the write direction are shared between
//! the halves behind an `Rc<RefCell<..>>`, borrowed only inside synchronous `poll` steps.
//!
//! Cancellation. monoio moves a buffer into each read or write operation, so dropping an
//! operation midway (a timeout) would drop its buffer, and on io_uring the kernel may already
//! have moved bytes into it. Here no operation is ever owned by the caller's future: each one
//! runs as a boxed future kept in the stream (the read one in the read half, the write one in
//! the shared state). A caller cancelled while an operation is in flight leaves it there, and
//! the next call on the stream takes it up again, so no received byte is lost and no TLS record
//! is torn. Buffered ciphertext and plaintext never leave the stream at all.
//!
//! Bounds: at most the read buffer's size ([`DEFAULT_READ_BUFFER`] unless configured) of
//! ciphertext is read ahead; rustls bounds what it buffers itself (one record being
//! reassembled, 16 KiB of decrypted plaintext, 64 KiB of handshake data, a few KeyUpdates); a
//! write accepts at most [`WRITE_CHUNK`] bytes of plaintext and returns only once their records
//! are on the socket.

use std::cell::RefCell;
use std::future::{Future, poll_fn};
use std::io::{self, BufRead, Write};
use std::pin::Pin;
use std::rc::Rc;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll, Wake, Waker, ready};

use monoio::BufResult;
use monoio::buf::{IoBuf, IoBufMut, IoVecBuf, IoVecBufMut};
use monoio::io::{
    AsyncReadRent, AsyncWriteRent, AsyncWriteRentExt, OwnedReadHalf, OwnedWriteHalf, Split,
    Splitable,
};
use rustls::pki_types::CertificateDer;
use rustls::{Connection, HandshakeKind, ProtocolVersion};

use crate::rent;

/// Ciphertext read from the socket in one operation, unless configured: 32 KiB, like the
/// plain-TCP read buffer (`limits.buffer_bytes`). At least one record of the largest size
/// (16 KiB + 256) fits; larger reads cost fewer operations (see README.md: measured).
pub const DEFAULT_READ_BUFFER: usize = 32 * 1024;

/// The range a configured read buffer is clamped to.
pub(crate) fn read_buffer_size(requested: usize) -> usize {
    requested.clamp(4 * 1024, 1 << 20)
}

/// Plaintext accepted by one write: four full records (rustls's own default bound on buffered
/// outgoing TLS data is 64 KiB as well).
pub(crate) const WRITE_CHUNK: usize = 64 * 1024;

/// Why a stream operation failed, carried inside the `io::Error`s the stream returns (see
/// [`StreamError::of`]).
#[derive(Debug, thiserror::Error)]
pub enum StreamError {
    /// The peer closed the TCP connection without a TLS `close_notify` (possible truncation).
    /// The error kind is `UnexpectedEof`; a clean close reads as `Ok(0)` instead.
    #[error("peer closed the connection without a TLS close_notify")]
    Truncated,
    /// The TLS connection failed (bad record, alert from the peer, protocol violation).
    #[error("TLS: {0}")]
    Tls(#[from] rustls::Error),
    /// The stream was shut down by this side (close_notify sent).
    #[error("the TLS stream was shut down")]
    Closed,
    /// An earlier write on the socket failed; the write direction is unusable.
    #[error("an earlier socket write failed ({0:?})")]
    WriteFailed(io::ErrorKind),
}

impl StreamError {
    /// The [`StreamError`] inside an `io::Error` returned by this crate's streams, if any.
    pub fn of(error: &io::Error) -> Option<&StreamError> {
        error.get_ref()?.downcast_ref()
    }

    pub(crate) fn into_io(self) -> io::Error {
        let kind = match &self {
            Self::Truncated => io::ErrorKind::UnexpectedEof,
            Self::Tls(_) => io::ErrorKind::InvalidData,
            Self::Closed => io::ErrorKind::BrokenPipe,
            Self::WriteFailed(kind) => *kind,
        };
        io::Error::new(kind, self)
    }
}

/// An application protocol chosen by ALPN.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AppProtocol {
    /// `h2`: HTTP/2 over TLS.
    H2,
    /// `http/1.1`.
    Http11,
}

impl AppProtocol {
    /// The protocol's ALPN identifier.
    pub fn id(self) -> &'static [u8] {
        match self {
            Self::H2 => b"h2",
            Self::Http11 => b"http/1.1",
        }
    }

    /// The protocol an ALPN identifier names, if it is one of ours.
    pub fn from_id(id: &[u8]) -> Option<Self> {
        match id {
            b"h2" => Some(Self::H2),
            b"http/1.1" => Some(Self::Http11),
            _ => None,
        }
    }
}

/// What the handshake settled, fixed for the connection's life.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionInfo {
    /// TLS 1.2 or TLS 1.3.
    pub version: Option<ProtocolVersion>,
    /// The cipher suite, e.g. `TLS13_AES_128_GCM_SHA256`.
    pub cipher_suite: Option<rustls::CipherSuite>,
    /// The protocol ALPN chose; `None` when the client offered none (treat as HTTP/1.1).
    pub alpn: Option<AppProtocol>,
    /// Whether the session was resumed (a ticket or a cached session) instead of a full
    /// handshake.
    pub resumed: bool,
    /// The server name the client asked for (server side; `None` without SNI).
    pub sni: Option<String>,
}

impl SessionInfo {
    fn of(conn: &Connection) -> Self {
        let sni = match conn {
            Connection::Server(server) => server.server_name().map(str::to_owned),
            Connection::Client(_) => None,
        };
        Self {
            version: conn.protocol_version(),
            cipher_suite: conn.negotiated_cipher_suite().map(|suite| suite.suite()),
            alpn: conn.alpn_protocol().and_then(AppProtocol::from_id),
            resumed: conn.handshake_kind() == Some(HandshakeKind::Resumed),
            sni,
        }
    }
}

/// A TLS connection over the owned-buffer stream `S` (a `monoio::net::TcpStream` in practice),
/// after its handshake ([`crate::TlsAcceptor::accept`], [`crate::TlsConnector::connect`]).
///
/// Reads return `Ok(0)` only after the peer's `close_notify`; a TCP EOF without one is an
/// `UnexpectedEof` error ([`StreamError::Truncated`]). [`shutdown`](AsyncWriteRent::shutdown)
/// sends `close_notify`, then closes the socket's write direction. Dropping the stream closes
/// the socket without `close_notify`.
pub struct TlsStream<S: AsyncWriteRent> {
    read: TlsReadHalf<S>,
    write: TlsWriteHalf<S>,
    info: SessionInfo,
}

/// The read direction of a split [`TlsStream`].
pub struct TlsReadHalf<S: AsyncWriteRent> {
    shared: Rc<RefCell<Shared<S>>>,
    io: ReadIo<S>,
    /// Ciphertext read from the socket: `cipher[pos..]` is not yet handed to rustls. Lent to
    /// the read operation (empty) while one is in flight.
    cipher: Vec<u8>,
    pos: usize,
    /// How much one socket read may bring.
    read_size: usize,
    /// The socket reported end of stream (and rustls was told).
    eof: bool,
}

/// The write direction of a split [`TlsStream`].
pub struct TlsWriteHalf<S: AsyncWriteRent> {
    shared: Rc<RefCell<Shared<S>>>,
}

type ReadOp<S> = Pin<Box<dyn Future<Output = (io::Result<usize>, Vec<u8>, OwnedReadHalf<S>)>>>;
type WriteOp<S> = Pin<Box<dyn Future<Output = (io::Result<()>, Vec<u8>, OwnedWriteHalf<S>)>>>;

/// The socket's read side: idle, or lent to a read in flight.
enum ReadIo<S: AsyncWriteRent> {
    Idle(OwnedReadHalf<S>),
    Busy(ReadOp<S>),
    /// Only while an operation is being set up (never seen across calls).
    Moving,
}

/// The socket's write side: idle with its (empty) ciphertext buffer, or lent to a write in
/// flight.
enum WriteIo<S: AsyncWriteRent> {
    Idle(OwnedWriteHalf<S>, Vec<u8>),
    Busy(WriteOp<S>),
    /// Only while an operation is being set up (never seen across calls).
    Moving,
}

/// How far the shutdown went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Shutdown {
    Open,
    /// `close_notify` is queued; the socket's write side is shut once it is out.
    Closing,
    /// The socket write op that shuts the write side is in flight.
    ShuttingSocket,
    Done,
}

/// State shared by the two halves: the rustls connection and the write direction (the read
/// half writes too: alerts, KeyUpdate answers and handshake flights go out through here).
struct Shared<S: AsyncWriteRent> {
    conn: Connection,
    out: WriteIo<S>,
    wakers: Arc<WriteWakers>,
    /// Passed to the write operation so that both halves waiting on it are woken.
    fan_out: Waker,
    /// The first fatal TLS error (an alert is queued for the peer when there is one).
    failed: Option<rustls::Error>,
    /// Set when a socket write failed: nothing more can be written.
    write_failed: Option<io::ErrorKind>,
    shutdown: Shutdown,
}

/// Which half waits on the write operation.
#[derive(Debug, Clone, Copy)]
enum Waiter {
    Reader = 0,
    Writer = 1,
}

/// The wakers of the (at most two) tasks waiting on the shared write operation. (A `Mutex`
/// although one thread uses it: `std::task::Wake` asks for `Send + Sync`; it is never
/// contended.)
#[derive(Default)]
struct WriteWakers {
    slots: Mutex<[Option<Waker>; 2]>,
}

impl WriteWakers {
    fn register(&self, who: Waiter, waker: &Waker) {
        let mut slots = self.slots.lock().unwrap_or_else(PoisonError::into_inner);
        let slot = &mut slots[who as usize];
        if !slot.as_ref().is_some_and(|w| w.will_wake(waker)) {
            *slot = Some(waker.clone());
        }
    }
}

impl Wake for WriteWakers {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        let taken = {
            let mut slots = self.slots.lock().unwrap_or_else(PoisonError::into_inner);
            [slots[0].take(), slots[1].take()]
        };
        for waker in taken.into_iter().flatten() {
            waker.wake();
        }
    }
}

impl<S: AsyncWriteRent + 'static> Shared<S> {
    /// Writes out every TLS record rustls has queued, one socket write at a time. Ready once
    /// nothing is queued and no write is in flight.
    fn poll_flush(&mut self, cx: &mut Context<'_>, who: Waiter) -> Poll<io::Result<()>> {
        loop {
            match &mut self.out {
                WriteIo::Busy(op) => {
                    self.wakers.register(who, cx.waker());
                    let mut fan_out = Context::from_waker(&self.fan_out);
                    let (result, buf, io) = ready!(op.as_mut().poll(&mut fan_out));
                    self.out = WriteIo::Idle(io, buf);
                    if self.shutdown == Shutdown::ShuttingSocket {
                        self.shutdown = Shutdown::Done;
                    }
                    if let Err(e) = result {
                        self.write_failed = Some(e.kind());
                        return Poll::Ready(Err(e));
                    }
                }
                WriteIo::Idle(..) => {
                    if let Some(kind) = self.write_failed {
                        return Poll::Ready(Err(StreamError::WriteFailed(kind).into_io()));
                    }
                    if self.conn.wants_write() {
                        self.start_write()?;
                    } else if self.shutdown == Shutdown::Closing {
                        self.start_socket_shutdown();
                    } else {
                        return Poll::Ready(Ok(()));
                    }
                }
                WriteIo::Moving => return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into())),
            }
        }
    }

    /// Moves every queued TLS record into the write buffer and starts writing it.
    fn start_write(&mut self) -> io::Result<()> {
        let WriteIo::Idle(mut io, mut buf) = std::mem::replace(&mut self.out, WriteIo::Moving)
        else {
            return Err(io::ErrorKind::BrokenPipe.into());
        };
        buf.clear();
        while self.conn.wants_write() {
            // Writing into a Vec does not fail; if it ever did, the stream stays consistent.
            if let Err(e) = self.conn.write_tls(&mut buf) {
                self.out = WriteIo::Idle(io, buf);
                return Err(e);
            }
        }
        self.out = WriteIo::Busy(Box::pin(async move {
            let (result, buf) = io.write_all(buf).await;
            (result.map(drop), buf, io)
        }));
        Ok(())
    }

    /// Starts shutting down the socket's write side (`close_notify` is already out).
    fn start_socket_shutdown(&mut self) {
        if let WriteIo::Idle(mut io, buf) = std::mem::replace(&mut self.out, WriteIo::Moving) {
            self.shutdown = Shutdown::ShuttingSocket;
            self.out = WriteIo::Busy(Box::pin(async move {
                let result = match io.shutdown().await {
                    // The peer has already closed the connection: nothing more can reach it,
                    // which is what a shutdown is for.
                    Err(e) if e.kind() == io::ErrorKind::NotConnected => Ok(()),
                    other => other,
                };
                (result, buf, io)
            }));
        }
    }

    /// Starts or continues writing what rustls queued (alerts, KeyUpdate answers) without
    /// waiting: the read direction never blocks on the write direction.
    fn kick(&mut self, cx: &mut Context<'_>) {
        if matches!(self.out, WriteIo::Busy(_)) || self.conn.wants_write() {
            let _ = self.poll_flush(cx, Waiter::Reader);
        }
    }

    /// Hands `cipher[*pos..]` to rustls and processes the records. A TLS error is kept (and
    /// its alert queued by rustls) and returned.
    fn feed(&mut self, cipher: &[u8], pos: &mut usize) -> io::Result<()> {
        let mut rest = &cipher[*pos..];
        let n = self.conn.read_tls(&mut rest)?;
        // Zero: a close_notify was received and rustls takes nothing more.
        *pos = if n == 0 { cipher.len() } else { *pos + n };
        self.process()
    }

    /// Tells rustls that the socket reached end of stream.
    fn feed_eof(&mut self) -> io::Result<()> {
        self.conn.read_tls(&mut &[][..])?;
        self.process()
    }

    fn process(&mut self) -> io::Result<()> {
        if let Err(e) = self.conn.process_new_packets() {
            self.failed.get_or_insert(e.clone());
            return Err(StreamError::Tls(e).into_io());
        }
        Ok(())
    }

    /// Whether plaintext may be written now.
    fn check_writable(&self) -> io::Result<()> {
        if let Some(e) = &self.failed {
            return Err(StreamError::Tls(e.clone()).into_io());
        }
        if self.shutdown != Shutdown::Open {
            return Err(StreamError::Closed.into_io());
        }
        Ok(())
    }
}

impl<S> TlsStream<S>
where
    S: Split + AsyncReadRent + AsyncWriteRent + 'static,
{
    /// Wraps `io` and a new rustls connection, reading at most `read_size` bytes of ciphertext
    /// at a time; the handshake is still to be driven.
    pub(crate) fn new(io: S, conn: Connection, read_size: usize) -> Self {
        let (r, w) = io.into_split();
        let wakers = Arc::new(WriteWakers::default());
        let shared = Rc::new(RefCell::new(Shared {
            conn,
            out: WriteIo::Idle(w, Vec::new()),
            fan_out: Waker::from(wakers.clone()),
            wakers,
            failed: None,
            write_failed: None,
            shutdown: Shutdown::Open,
        }));
        let read = TlsReadHalf {
            shared: shared.clone(),
            io: ReadIo::Idle(r),
            cipher: Vec::new(),
            pos: 0,
            read_size: read_buffer_size(read_size),
            eof: false,
        };
        let info = SessionInfo::of(&shared.borrow().conn);
        Self { read, write: TlsWriteHalf { shared }, info }
    }

    /// What the handshake settled: version, suite, ALPN, resumption, SNI.
    pub fn info(&self) -> &SessionInfo {
        &self.info
    }

    /// The peer's certificate chain, leaf first (server certificates on the client side;
    /// client certificates on a server that asked for them).
    pub fn peer_certificates(&self) -> Option<Vec<CertificateDer<'static>>> {
        let shared = self.read.shared.borrow();
        shared.conn.peer_certificates().map(<[_]>::to_vec)
    }

    /// Splits the stream into a read half and a write half that can be used at the same time
    /// from two futures (or tasks) of this thread.
    pub fn into_split(self) -> (TlsReadHalf<S>, TlsWriteHalf<S>) {
        (self.read, self.write)
    }

    /// Drives the handshake to its end: every flight is written, and the connection is no
    /// longer handshaking. A TLS error waits for its alert to go out before it is returned.
    pub(crate) async fn handshake(&mut self) -> Result<(), crate::HandshakeError> {
        poll_fn(|cx| self.poll_handshake(cx)).await?;
        self.info = SessionInfo::of(&self.read.shared.borrow().conn);
        Ok(())
    }

    fn poll_handshake(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), crate::HandshakeError>> {
        use crate::HandshakeError;
        let read = &mut self.read;
        loop {
            {
                let mut shared = read.shared.borrow_mut();
                let flushed = ready!(shared.poll_flush(cx, Waiter::Writer));
                if let Some(e) = shared.failed.take() {
                    return Poll::Ready(Err(HandshakeError::from_tls(e)));
                }
                flushed.map_err(HandshakeError::Io)?;
                if !shared.conn.is_handshaking() {
                    return Poll::Ready(Ok(()));
                }
                if read.eof {
                    return Poll::Ready(Err(HandshakeError::Eof));
                }
                if read.pos < read.cipher.len() {
                    // A TLS error is kept in `failed` and reported once its alert is out.
                    if let Err(e) = shared.feed(&read.cipher, &mut read.pos)
                        && shared.failed.is_none()
                    {
                        return Poll::Ready(Err(HandshakeError::Io(e)));
                    }
                    continue;
                }
            }
            if ready!(read.poll_fill(cx)).map_err(HandshakeError::Io)? == 0 {
                read.eof = true;
                // A TLS error here is kept in `failed` and reported above.
                let _ = read.shared.borrow_mut().feed_eof();
            }
        }
    }

    /// Takes the stream apart for the poll-io conversion: the socket, the rustls connection and
    /// the ciphertext read but not yet processed. `None` (the stream is dropped) while a socket
    /// operation is in flight, after a cancelled call.
    pub(crate) fn into_parts(self) -> Option<Parts<S>> {
        let Self { read, write, info } = self;
        let TlsReadHalf { shared, io, cipher, pos, read_size, .. } = read;
        drop(write);
        let ReadIo::Idle(r) = io else { return None };
        let shared = Rc::try_unwrap(shared).ok()?.into_inner();
        let WriteIo::Idle(w, _) = shared.out else { return None };
        let io = r.reunite(w).ok()?;
        Some(Parts { io, conn: shared.conn, cipher: cipher[pos..].to_vec(), read_size, info })
    }
}

/// A finished [`TlsStream`] taken apart (see [`TlsStream::into_parts`]).
pub(crate) struct Parts<S> {
    pub(crate) io: S,
    pub(crate) conn: Connection,
    /// Ciphertext read from the socket and not yet given to rustls.
    pub(crate) cipher: Vec<u8>,
    pub(crate) read_size: usize,
    pub(crate) info: SessionInfo,
}

impl<S: AsyncWriteRent> TlsReadHalf<S>
where
    S: AsyncReadRent + 'static,
{
    /// Reads from the socket into the (empty) ciphertext buffer, resuming the read in flight if
    /// a previous call was cancelled. `Ok(0)`: end of stream.
    fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        if let ReadIo::Idle(_) = self.io {
            let mut buf = std::mem::take(&mut self.cipher);
            buf.clear();
            buf.reserve_exact(self.read_size);
            self.pos = 0;
            if let ReadIo::Idle(mut io) = std::mem::replace(&mut self.io, ReadIo::Moving) {
                self.io = ReadIo::Busy(Box::pin(async move {
                    let (result, buf) = io.read(buf).await;
                    (result, buf, io)
                }));
            }
        }
        let ReadIo::Busy(op) = &mut self.io else {
            return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into()));
        };
        let (result, buf, io) = ready!(op.as_mut().poll(cx));
        self.io = ReadIo::Idle(io);
        self.cipher = buf;
        self.pos = 0;
        Poll::Ready(result)
    }

    /// Reads plaintext into `dst` (a copy function returning how much it took).
    fn poll_read_with(
        &mut self,
        cx: &mut Context<'_>,
        dst: &mut dyn FnMut(&[u8]) -> usize,
    ) -> Poll<io::Result<usize>> {
        loop {
            {
                let mut shared = self.shared.borrow_mut();
                shared.kick(cx);
                let mut reader = shared.conn.reader();
                match reader.fill_buf() {
                    Ok(chunk) if !chunk.is_empty() => {
                        let n = dst(chunk);
                        reader.consume(n);
                        return Poll::Ready(Ok(n));
                    }
                    // close_notify received: clean end of stream.
                    Ok(_) => return Poll::Ready(Ok(0)),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
                        return Poll::Ready(Err(StreamError::Truncated.into_io()));
                    }
                    Err(e) => return Poll::Ready(Err(e)),
                }
                if let Some(e) = &shared.failed {
                    return Poll::Ready(Err(StreamError::Tls(e.clone()).into_io()));
                }
                if self.pos < self.cipher.len() {
                    let fed = shared.feed(&self.cipher, &mut self.pos);
                    // Records the processing queued (an alert, a KeyUpdate answer) go out now.
                    shared.kick(cx);
                    fed?;
                    continue;
                }
                if self.eof {
                    // rustls saw the EOF, so its reader answered above; be total anyway.
                    return Poll::Ready(Err(StreamError::Truncated.into_io()));
                }
            }
            if ready!(self.poll_fill(cx))? == 0 {
                self.eof = true;
                self.shared.borrow_mut().feed_eof()?;
            }
        }
    }
}

impl<S: AsyncWriteRent + 'static> TlsWriteHalf<S> {
    /// Encrypts up to [`WRITE_CHUNK`] bytes of `parts` and writes the records out; returns how
    /// many plaintext bytes were taken.
    async fn send(&mut self, parts: &[&[u8]]) -> io::Result<usize> {
        poll_fn(|cx| self.shared.borrow_mut().poll_flush(cx, Waiter::Writer)).await?;
        let taken = {
            let mut shared = self.shared.borrow_mut();
            shared.check_writable()?;
            let mut writer = shared.conn.writer();
            let mut taken = 0;
            for part in parts {
                let part = &part[..part.len().min(WRITE_CHUNK - taken)];
                let n = writer.write(part)?;
                taken += n;
                if n < part.len() || taken == WRITE_CHUNK {
                    break;
                }
            }
            taken
        };
        poll_fn(|cx| self.shared.borrow_mut().poll_flush(cx, Waiter::Writer)).await?;
        Ok(taken)
    }
}

impl<S> AsyncReadRent for TlsReadHalf<S>
where
    S: AsyncReadRent + AsyncWriteRent + 'static,
{
    async fn read<T: IoBufMut>(&mut self, mut buf: T) -> BufResult<usize, T> {
        if buf.bytes_total() == 0 {
            return (Ok(0), buf);
        }
        let result = poll_fn(|cx| self.poll_read_with(cx, &mut |src| rent::fill(&mut buf, src)));
        (result.await, buf)
    }

    async fn readv<T: IoVecBufMut>(&mut self, mut buf: T) -> BufResult<usize, T> {
        let result =
            poll_fn(|cx| self.poll_read_with(cx, &mut |src| rent::fill_iovec(&mut buf, src)));
        (result.await, buf)
    }
}

impl<S: AsyncWriteRent + 'static> AsyncWriteRent for TlsWriteHalf<S> {
    async fn write<T: IoBuf>(&mut self, buf: T) -> BufResult<usize, T> {
        let result = self.send(&[rent::bytes(&buf)]).await;
        (result, buf)
    }

    async fn writev<T: IoVecBuf>(&mut self, buf: T) -> BufResult<usize, T> {
        let result = self.send(&rent::iovec_bytes(&buf)).await;
        (result, buf)
    }

    async fn flush(&mut self) -> io::Result<()> {
        poll_fn(|cx| self.shared.borrow_mut().poll_flush(cx, Waiter::Writer)).await
    }

    /// Sends `close_notify` (once), writes it out, then shuts the socket's write side.
    async fn shutdown(&mut self) -> io::Result<()> {
        {
            let mut shared = self.shared.borrow_mut();
            if shared.shutdown == Shutdown::Open {
                shared.conn.send_close_notify();
                shared.shutdown = Shutdown::Closing;
            }
        }
        poll_fn(|cx| self.shared.borrow_mut().poll_flush(cx, Waiter::Writer)).await
    }
}

impl<S> AsyncReadRent for TlsStream<S>
where
    S: AsyncReadRent + AsyncWriteRent + 'static,
{
    fn read<T: IoBufMut>(&mut self, buf: T) -> impl Future<Output = BufResult<usize, T>> {
        self.read.read(buf)
    }

    fn readv<T: IoVecBufMut>(&mut self, buf: T) -> impl Future<Output = BufResult<usize, T>> {
        self.read.readv(buf)
    }
}

impl<S: AsyncWriteRent + 'static> AsyncWriteRent for TlsStream<S> {
    fn write<T: IoBuf>(&mut self, buf: T) -> impl Future<Output = BufResult<usize, T>> {
        self.write.write(buf)
    }

    fn writev<T: IoVecBuf>(&mut self, buf: T) -> impl Future<Output = BufResult<usize, T>> {
        self.write.writev(buf)
    }

    fn flush(&mut self) -> impl Future<Output = io::Result<()>> {
        self.write.flush()
    }

    fn shutdown(&mut self) -> impl Future<Output = io::Result<()>> {
        self.write.shutdown()
    }
}

impl<S: AsyncWriteRent> std::fmt::Debug for TlsStream<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsStream").field("info", &self.info).finish_non_exhaustive()
    }
}

impl<S: AsyncWriteRent> std::fmt::Debug for TlsReadHalf<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsReadHalf").field("eof", &self.eof).finish_non_exhaustive()
    }
}

impl<S: AsyncWriteRent> std::fmt::Debug for TlsWriteHalf<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsWriteHalf").finish_non_exhaustive()
    }
}
