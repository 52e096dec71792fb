//! Streaming body framing: a strict chunked decoder and the copy loop that moves a body from
//! one connection to the other through one fixed buffer, so memory stays bounded whatever the
//! body size.

use std::future::Future;
use std::num::NonZeroU64;
use std::pin::Pin;
use std::time::{Duration, Instant};

use monoio::io::{AsyncReadRent, AsyncWriteRent};

use fulcrum_util::{ReadBuf, Timer};

use super::head::Framing;

/// Sees a body's bytes as they stream past (the request body, for the access record; the
/// response body, for the cache).
pub trait BodyTap {
    /// Called with each slice of body payload (chunk framing removed), in order, as it is
    /// forwarded.
    fn tap(&mut self, bytes: &[u8]);

    /// Called with each slice exactly as written to the destination (chunk framing and
    /// trailers included when the body is relayed chunked), in order. Default: ignored.
    #[inline]
    fn wire(&mut self, bytes: &[u8]) {
        let _ = bytes;
    }

    /// Called once the source has delivered the whole body, before its last bytes are
    /// written to the destination (a backend whose response is fully read is no longer busy
    /// with it, whatever the client still has to receive). Default: ignored.
    #[inline]
    fn source_done(&mut self) {}
}

/// No tap.
impl BodyTap for () {
    #[inline]
    fn tap(&mut self, _: &[u8]) {}
}

/// Longest chunk-size line (digits plus extensions) accepted.
const MAX_CHUNK_LINE: usize = 1024;
/// Largest trailer section accepted.
const MAX_TRAILERS: usize = 16 * 1024;

/// Why a chunked body was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("invalid chunked encoding: {0}")]
pub struct ChunkError(&'static str);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Reading hex digits of a chunk size.
    Size { digits: u8 },
    /// Inside chunk extensions, until CR.
    Extension,
    /// Expecting LF after a chunk-size line.
    SizeLf,
    /// Inside chunk data.
    Data,
    /// Expecting CR after chunk data.
    DataCr,
    /// Expecting LF after chunk data.
    DataLf,
    /// At the start of a trailer line (or of the final empty line).
    TrailerStart,
    /// Inside a trailer field line.
    Trailer,
    /// Expecting LF after a trailer line.
    TrailerLf,
    /// Expecting the LF of the final empty line.
    EndLf,
    /// The body is complete.
    Done,
}

/// A streaming, strict decoder for the chunked transfer coding (RFC 9112 7.1).
///
/// It validates the framing and reports which input bytes are chunk payload, so the caller can
/// forward the raw bytes unchanged (trailers included) or just the payload.
#[derive(Debug, Clone)]
pub struct ChunkedDecoder {
    state: State,
    chunk_left: u64,
    line_len: usize,
    trailer_len: usize,
}

impl Default for ChunkedDecoder {
    fn default() -> Self {
        Self { state: State::Size { digits: 0 }, chunk_left: 0, line_len: 0, trailer_len: 0 }
    }
}

impl ChunkedDecoder {
    /// Whether the terminating chunk and trailers have been read.
    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// Decodes as much of `input` as possible. Returns how many bytes belong to this body;
    /// `on_payload` receives the ranges of `input` that are chunk payload, in order.
    pub fn decode(
        &mut self,
        input: &[u8],
        mut on_payload: impl FnMut(std::ops::Range<usize>),
    ) -> Result<usize, ChunkError> {
        self.decode_inner(input, false, &mut on_payload)
    }

    /// Like [`decode`](Self::decode) but stops right after the first payload range, which it
    /// returns, so the caller may rewrite `input` before decoding on.
    pub fn decode_one(
        &mut self,
        input: &[u8],
    ) -> Result<(usize, Option<std::ops::Range<usize>>), ChunkError> {
        let mut found = None;
        let n = self.decode_inner(input, true, &mut |r| found = Some(r))?;
        Ok((n, found))
    }

    fn decode_inner(
        &mut self,
        input: &[u8],
        stop_after_payload: bool,
        on_payload: &mut dyn FnMut(std::ops::Range<usize>),
    ) -> Result<usize, ChunkError> {
        let mut i = 0;
        while i < input.len() {
            let b = input[i];
            match self.state {
                State::Done => break,
                State::Data => {
                    let take = (input.len() - i)
                        .min(usize::try_from(self.chunk_left).unwrap_or(usize::MAX));
                    on_payload(i..i + take);
                    self.chunk_left -= take as u64;
                    i += take;
                    if self.chunk_left == 0 {
                        self.state = State::DataCr;
                    }
                    if stop_after_payload {
                        return Ok(i);
                    }
                    continue;
                }
                State::Size { digits } => {
                    self.line_len += 1;
                    if let Some(d) = (b as char).to_digit(16) {
                        if digits >= 16 {
                            return Err(ChunkError("chunk size too large"));
                        }
                        self.chunk_left = self.chunk_left << 4 | u64::from(d);
                        self.state = State::Size { digits: digits + 1 };
                    } else if digits == 0 {
                        return Err(ChunkError("missing chunk size"));
                    } else if b == b';' {
                        self.state = State::Extension;
                    } else if b == b'\r' {
                        self.state = State::SizeLf;
                    } else {
                        return Err(ChunkError("invalid chunk size"));
                    }
                }
                State::Extension => {
                    self.line_len += 1;
                    if self.line_len > MAX_CHUNK_LINE {
                        return Err(ChunkError("chunk extension too long"));
                    }
                    if b == b'\r' {
                        self.state = State::SizeLf;
                    } else if b == b'\n' || (b < 0x20 && b != b'\t') || b == 0x7f {
                        return Err(ChunkError("invalid byte in chunk extension"));
                    }
                }
                State::SizeLf => {
                    if b != b'\n' {
                        return Err(ChunkError("bare CR after chunk size"));
                    }
                    self.line_len = 0;
                    self.state =
                        if self.chunk_left == 0 { State::TrailerStart } else { State::Data };
                }
                State::DataCr => {
                    if b != b'\r' {
                        return Err(ChunkError("chunk data longer than its size"));
                    }
                    self.state = State::DataLf;
                }
                State::DataLf => {
                    if b != b'\n' {
                        return Err(ChunkError("bare CR after chunk data"));
                    }
                    self.state = State::Size { digits: 0 };
                }
                State::TrailerStart => {
                    self.trailer_len += 1;
                    self.state = if b == b'\r' { State::EndLf } else { State::Trailer };
                    if b == b'\n' {
                        return Err(ChunkError("bare LF in trailers"));
                    }
                }
                State::Trailer => {
                    self.trailer_len += 1;
                    if self.trailer_len > MAX_TRAILERS {
                        return Err(ChunkError("trailer section too large"));
                    }
                    if b == b'\r' {
                        self.state = State::TrailerLf;
                    } else if b == b'\n' {
                        return Err(ChunkError("bare LF in trailers"));
                    }
                }
                State::TrailerLf => {
                    if b != b'\n' {
                        return Err(ChunkError("bare CR in trailers"));
                    }
                    self.state = State::TrailerStart;
                }
                State::EndLf => {
                    if b != b'\n' {
                        return Err(ChunkError("bare CR at end of body"));
                    }
                    self.state = State::Done;
                }
            }
            i += 1;
        }
        Ok(i)
    }
}

/// Which side of a body copy failed.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    /// Reading from the source failed or timed out.
    #[error("reading body: {0}")]
    Read(std::io::Error),
    /// The source closed before the body was complete.
    #[error("connection closed before the body was complete")]
    Truncated,
    /// The source was silent for longer than the read timeout.
    #[error("body read timed out")]
    ReadTimeout,
    /// The client sent the body slower than the minimum rate.
    #[error("body slower than the minimum rate")]
    TooSlow,
    /// The body exceeded the configured limit.
    #[error("body larger than the limit")]
    TooLarge,
    /// Writing to the destination failed or timed out.
    #[error("writing body: {0}")]
    Write(std::io::Error),
    /// The chunked framing was invalid.
    #[error(transparent)]
    Chunked(#[from] ChunkError),
}

/// How a body is copied.
#[derive(Debug, Clone, Copy)]
pub struct CopySpec {
    /// The body's framing on the source side.
    pub framing: Framing,
    /// Send only chunk payload (for an HTTP/1.0 client) instead of the raw chunked bytes.
    pub dechunk: bool,
    /// Longest silence allowed between two reads from the source.
    pub read_timeout: Duration,
    /// Longest a write to the destination may take.
    pub write_timeout: Duration,
    /// Most body bytes accepted (0 = unlimited).
    pub max_bytes: u64,
    /// The slowest average the source may send at (request bodies only).
    pub min_rate: Option<MinRate>,
}

/// The slowest a request body may arrive, in the model of Apache's `mod_reqtimeout` `MinRate`:
/// a body may take `grace`, plus `1/rate` seconds for each byte received so far. A client that
/// falls behind is cut off, however regularly it sends its few bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MinRate {
    bytes_per_sec: NonZeroU64,
    grace: Duration,
}

impl MinRate {
    /// `bytes_per_sec` after `grace`; `None` (no minimum) when the rate is 0.
    pub fn new(bytes_per_sec: u64, grace: Duration) -> Option<Self> {
        Some(Self { bytes_per_sec: NonZeroU64::new(bytes_per_sec)?, grace })
    }

    /// The same minimum for the rest of a body whose first `received` bytes already arrived
    /// (with the request head): the time they bought is added to the grace.
    pub fn after(self, received: u64) -> Self {
        Self { grace: self.allowance(received), ..self }
    }

    /// How long a body may have taken once `received` bytes of it arrived.
    fn allowance(&self, received: u64) -> Duration {
        let nanos = u128::from(received) * 1_000_000_000 / u128::from(self.bytes_per_sec.get());
        self.grace.saturating_add(Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX)))
    }
}

/// Measures the time a body copy spends waiting on its client against a [`MinRate`]. Time the
/// destination takes to accept bytes is the backend's, not the client's, and is left out.
///
/// Cost: one clock read per read from the client, plus one per write that does not complete at
/// once.
#[derive(Debug)]
pub struct RateClock {
    rate: MinRate,
    /// Start of the interval not yet accounted for.
    mark: Instant,
    /// Time spent waiting on the client so far.
    waited: Duration,
    /// A write is (or was, since `mark`) waiting on the destination.
    stalled: bool,
}

impl RateClock {
    /// Starts the clock for one body.
    pub fn start(rate: MinRate) -> Self {
        Self { rate, mark: Instant::now(), waited: Duration::ZERO, stalled: false }
    }

    /// Called before each read: how long the client may take for its next bytes, having sent
    /// `received` so far (zero once it fell behind).
    pub fn remaining(&mut self, received: u64) -> Duration {
        let now = Instant::now();
        if !self.stalled {
            self.waited += now.saturating_duration_since(self.mark);
        }
        self.mark = now;
        self.stalled = false;
        self.rate.allowance(received).saturating_sub(self.waited)
    }

    /// A write to the destination is waiting: from now until the next read, the time is not
    /// the client's.
    fn write_stalled(&mut self) {
        if !self.stalled {
            self.waited += self.mark.elapsed();
            self.stalled = true;
        }
    }
}

/// Awaits `read`, a read from a client, under the gap timeout `gap` and, when set, the body's
/// minimum rate (`received` bytes so far), bounded by `timer`.
pub async fn client_paced<F: Future>(
    read: F,
    gap: Duration,
    clock: Option<&mut RateClock>,
    received: u64,
    timer: Pin<&mut Timer>,
) -> Result<F::Output, BodyError> {
    let (wait, slow) = match clock {
        Some(clock) => {
            let left = clock.remaining(received);
            if left < gap { (left, true) } else { (gap, false) }
        }
        None => (gap, false),
    };
    if wait.is_zero() && slow {
        return Err(BodyError::TooSlow);
    }
    timer
        .within(wait, read)
        .await
        .map_err(|_| if slow { BodyError::TooSlow } else { BodyError::ReadTimeout })
}

/// Reads into `buf` from a client under [`client_paced`]; `Ok(0)` at end of stream.
pub async fn fill_within<R: AsyncReadRent>(
    src: &mut R,
    buf: &mut ReadBuf,
    gap: Duration,
    clock: Option<&mut RateClock>,
    received: u64,
    timer: Pin<&mut Timer>,
) -> Result<usize, BodyError> {
    client_paced(buf.fill(src), gap, clock, received, timer).await?.map_err(BodyError::Read)
}

/// Awaits a write to the backend, telling `clock` (if any) when it has to wait on it.
pub async fn timed_write<F: Future>(write: F, clock: Option<&mut RateClock>) -> F::Output {
    let Some(clock) = clock else { return write.await };
    let mut write = std::pin::pin!(write);
    std::future::poll_fn(|cx| {
        let polled = write.as_mut().poll(cx);
        if polled.is_pending() {
            clock.write_stalled();
        }
        polled
    })
    .await
}

/// Copies one body from `src` (whose unread bytes are in `buf`) to `dst`.
///
/// Bytes after the body (a pipelined request) stay unread in `buf`. Returns the number of body
/// bytes read from the source. `tap` sees the body's payload (chunk framing removed) as it
/// passes, for the access log, and every slice as written ([`BodyTap::wire`]), for the cache;
/// pass `&mut ()` for none. `timer` bounds each read and write in turn.
pub async fn copy_body<R, W, T>(
    src: &mut R,
    buf: &mut ReadBuf,
    dst: &mut W,
    spec: CopySpec,
    tap: &mut T,
    mut timer: Pin<&mut Timer>,
) -> Result<u64, BodyError>
where
    R: AsyncReadRent,
    W: AsyncWriteRent,
    T: BodyTap + ?Sized,
{
    let mut total: u64 = 0;
    let mut remaining = match spec.framing {
        Framing::None | Framing::Length(0) => return Ok(0),
        Framing::Length(n) => n,
        Framing::Chunked | Framing::UntilClose => u64::MAX,
    };
    let mut decoder = ChunkedDecoder::default();
    let mut clock = spec.min_rate.map(RateClock::start);
    loop {
        if buf.is_empty() {
            let n = fill_within(src, buf, spec.read_timeout, clock.as_mut(), total, timer.as_mut())
                .await?;
            if n == 0 {
                return match spec.framing {
                    Framing::UntilClose => {
                        tap.source_done();
                        Ok(total)
                    }
                    _ => Err(BodyError::Truncated),
                };
            }
        }
        let available = buf.len();
        let (take, done) = match spec.framing {
            Framing::Chunked => {
                let mut payload_end = 0;
                let take = if spec.dechunk {
                    // Move each payload range to the front, in place; send only those bytes.
                    let data = buf.data_mut();
                    let mut pos = 0;
                    while pos < data.len() && !decoder.is_done() {
                        let (n, payload) = decoder.decode_one(&data[pos..])?;
                        if let Some(r) = payload {
                            data.copy_within(pos + r.start..pos + r.end, payload_end);
                            payload_end += r.len();
                        }
                        pos += n;
                    }
                    pos
                } else {
                    let data = buf.data();
                    decoder.decode(data, |r| tap.tap(&data[r]))?
                };
                total += take as u64;
                if spec.dechunk {
                    let done = decoder.is_done();
                    if done {
                        tap.source_done();
                    }
                    if payload_end > 0 {
                        tap.tap(&buf.data()[..payload_end]);
                        tap.wire(&buf.data()[..payload_end]);
                        write_front(buf, dst, payload_end, spec.write_timeout, timer.as_mut())
                            .await?;
                    }
                    buf.consume(take - payload_end);
                    if done {
                        return Ok(total);
                    }
                    continue;
                }
                (take, decoder.is_done())
            }
            _ => {
                let take = usize::try_from(remaining).map_or(available, |r| r.min(available));
                tap.tap(&buf.data()[..take]);
                remaining -= take as u64;
                total += take as u64;
                (take, remaining == 0)
            }
        };
        if spec.max_bytes > 0 && total > spec.max_bytes {
            return Err(BodyError::TooLarge);
        }
        if done {
            tap.source_done();
        }
        if take > 0 {
            tap.wire(&buf.data()[..take]);
            let write = timer.as_mut().within(spec.write_timeout, buf.write_to(dst, take));
            match timed_write(write, clock.as_mut()).await {
                Err(_) => return Err(BodyError::Write(std::io::ErrorKind::TimedOut.into())),
                Ok(Err(e)) => return Err(BodyError::Write(e)),
                Ok(Ok(())) => {}
            }
        }
        if done {
            return Ok(total);
        }
    }
}

/// Writes the first `n` unread bytes of `buf` to `dst` and consumes them.
async fn write_front<W: AsyncWriteRent>(
    buf: &mut ReadBuf,
    dst: &mut W,
    n: usize,
    write_timeout: Duration,
    timer: Pin<&mut Timer>,
) -> Result<(), BodyError> {
    match timer.within(write_timeout, buf.write_to(dst, n)).await {
        Err(_) => Err(BodyError::Write(std::io::ErrorKind::TimedOut.into())),
        Ok(Err(e)) => Err(BodyError::Write(e)),
        Ok(Ok(())) => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode_all(input: &[u8], split: usize) -> Result<(usize, Vec<u8>, bool), ChunkError> {
        let mut d = ChunkedDecoder::default();
        let mut payload = Vec::new();
        let mut consumed = 0;
        for part in input.chunks(split.max(1)) {
            let base = consumed;
            let n = d.decode(part, |r| payload.extend_from_slice(&part[r]))?;
            consumed = base + n;
            if d.is_done() {
                break;
            }
        }
        Ok((consumed, payload, d.is_done()))
    }

    #[test]
    fn chunked_round_trip_any_split() {
        let body = b"5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nX-T: 1\r\n\r\nNEXT";
        for split in [1, 2, 3, 7, 100] {
            let (consumed, payload, done) = decode_all(body, split).unwrap();
            assert!(done);
            assert_eq!(payload, b"hello world");
            assert_eq!(consumed, body.len() - 4, "split {split}");
        }
    }

    #[test]
    fn min_rate_allowance_grows_by_one_over_rate_per_byte() {
        assert_eq!(MinRate::new(0, Duration::from_secs(1)), None, "0 turns the check off");
        let rate = MinRate::new(500, Duration::from_secs(60)).unwrap();
        assert_eq!(rate.allowance(0), Duration::from_secs(60));
        assert_eq!(rate.allowance(1000), Duration::from_secs(62));
        assert_eq!(rate.allowance(1), Duration::from_millis(60_002));
        assert_eq!(rate.after(1000).allowance(500), Duration::from_secs(63));
        // Absurd sizes saturate instead of overflowing.
        assert_eq!(MinRate::new(1, Duration::MAX).unwrap().allowance(u64::MAX), Duration::MAX);
    }

    #[test]
    fn chunked_errors() {
        for bad in [
            &b"x\r\n"[..],
            b"5\nhello\r\n",
            b"5\r\nhelloX\r\n",
            b"11111111111111111\r\n",
            b"0\r\nX: 1\n\r\n",
            b";\r\n",
        ] {
            assert!(decode_all(bad, 100).is_err(), "{:?}", String::from_utf8_lossy(bad));
        }
        let long_ext = format!("1;{}\r\n", "a".repeat(2000));
        assert!(decode_all(long_ext.as_bytes(), 100).is_err());
    }
}
