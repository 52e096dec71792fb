//! Sending: heads, DATA, trailers and control frames written straight into the write buffer,
//! DATA held per stream only while the peer's windows or a full write buffer keep it back, and
//! the receive credit the application releases.

use super::stream::{Closure, Half, Stream};
use super::{Cause, Connection, Core, Role, SendError};
use crate::frame::{self, ErrorCode, PendingHeaders, StreamId};
use crate::hpack::{Encoder, Field};

/// What [`Connection::send_data`] did with the bytes it was given.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Sent {
    /// Bytes taken (written or queued); the rest did not fit the stream's send buffer.
    pub accepted: usize,
    /// Bytes written to the write buffer at once. The queued rest is reported by
    /// [`Connection::take_sent`] as the peer's window lets it out.
    pub written: usize,
}

impl Connection {
    /// Client: opens a stream with a request head (`fields`, pseudo-header fields first) and
    /// returns its identifier. `end_stream`: no body follows.
    pub fn send_request<'f>(
        &mut self,
        fields: impl IntoIterator<Item = Field<'f>>,
        end_stream: bool,
    ) -> Result<StreamId, SendError> {
        if self.c.error.is_some() {
            return Err(SendError::Closed);
        }
        if self.c.role != Role::Client {
            return Err(SendError::State);
        }
        if !self.can_open_stream() {
            return Err(SendError::Refused);
        }
        let c = &mut self.c;
        let stream = StreamId::new(c.next_local_id);
        c.next_local_id += 2;
        let head = c.write_block(stream, None, fields, end_stream);
        let mut s = Stream::new(c.config.initial_stream_window, c.peer.initial_window);
        s.send_final = true;
        s.no_body = head;
        if end_stream {
            s.send = Half::Closed;
        }
        c.streams.insert(stream, s);
        c.guard.stream_opened();
        Ok(stream)
    }

    /// Server: sends a response head with `status` (1xx heads may precede the final one)
    /// and `fields` (no pseudo-header fields). `end_stream`: no body follows.
    pub fn send_response<'f>(
        &mut self,
        stream: StreamId,
        status: u16,
        fields: impl IntoIterator<Item = Field<'f>>,
        end_stream: bool,
    ) -> Result<(), SendError> {
        let c = &mut self.c;
        if c.error.is_some() {
            return Err(SendError::Closed);
        }
        if c.role != Role::Server || !(100..=999).contains(&status) {
            return Err(SendError::State);
        }
        let s = c.streams.get(stream).ok_or(SendError::UnknownStream)?;
        if s.send_final || s.send == Half::Closed || (status < 200 && end_stream) {
            return Err(SendError::State);
        }
        c.write_block(stream, Some(status), fields, end_stream);
        if let Some(s) = c.streams.get_mut(stream)
            && status >= 200
        {
            s.send_final = true;
            if end_stream {
                s.send = Half::Closed;
            }
        }
        if end_stream {
            c.remove_if_done(stream);
        }
        Ok(())
    }

    /// Sends trailers, which end the stream's outgoing side; written once the DATA queued
    /// before them is out.
    pub fn send_trailers<'f>(
        &mut self,
        stream: StreamId,
        fields: impl IntoIterator<Item = Field<'f>>,
    ) -> Result<(), SendError> {
        let c = &mut self.c;
        if c.error.is_some() {
            return Err(SendError::Closed);
        }
        let s = c.streams.get_mut(stream).ok_or(SendError::UnknownStream)?;
        if !s.can_send_data() {
            return Err(SendError::State);
        }
        if s.queue.is_empty() {
            s.send = Half::Closed;
            c.write_block(stream, None, fields, true);
            c.remove_if_done(stream);
            return Ok(());
        }
        // Encoded now without a table size update (a fresh encoder never emits one); the
        // connection's encoder adds one, if due, when the block is written.
        let mut block = Vec::new();
        let mut encoder = Encoder::new();
        for f in fields {
            encoder.encode_field(&f, &mut block);
        }
        s.trailers = Some(block);
        s.end_queued = true;
        Ok(())
    }

    /// How many bytes [`Connection::send_data`] would take on `stream` now.
    pub fn send_capacity(&self, stream: StreamId) -> usize {
        let max = self.c.config.max_send_buffer;
        self.c.streams.get(stream).filter(|s| s.can_send_data()).map_or(0, |s| max - s.queued())
    }

    /// DATA bytes of `stream` waiting for the peer's window.
    pub fn queued(&self, stream: StreamId) -> usize {
        self.c.streams.get(stream).map_or(0, Stream::queued)
    }

    /// Sends `data` on `stream` (after its final head), ending the stream's outgoing side when
    /// `end_stream` and every byte was accepted. What the peer's windows allow is written at
    /// once, as DATA frames of at most the peer's SETTINGS_MAX_FRAME_SIZE; the rest, up to
    /// `max_send_buffer`, waits in the stream's queue.
    pub fn send_data(
        &mut self,
        stream: StreamId,
        data: &[u8],
        end_stream: bool,
    ) -> Result<Sent, SendError> {
        let c = &mut self.c;
        if c.error.is_some() {
            return Err(SendError::Closed);
        }
        let max_frame = c.peer.max_frame_size as usize;
        let max_buffer = c.config.max_write_buffer;
        let room = c.config.max_send_buffer;
        let s = c.streams.get_mut(stream).ok_or(SendError::UnknownStream)?;
        if !s.can_send_data() {
            return Err(SendError::State);
        }
        let mut written = 0;
        if s.queue.is_empty() {
            if data.is_empty() && end_stream {
                frame::write_data(&mut c.out, stream, b"", true);
                s.send = Half::Closed;
                c.remove_if_done(stream);
                return Ok(Sent::default());
            }
            // Written straight from the caller's buffer while the windows and the write
            // buffer allow.
            while written < data.len() && c.out.len() < max_buffer {
                let allowed = s.send_window.min(c.send_window).min(max_frame as i64);
                if allowed <= 0 {
                    break;
                }
                let n = (allowed as usize).min(data.len() - written);
                let last = end_stream && written + n == data.len();
                frame::write_data(&mut c.out, stream, &data[written..written + n], last);
                written += n;
                s.send_window -= n as i64;
                c.send_window -= n as i64;
                c.guard.data_sent();
            }
            if written == data.len() && end_stream {
                s.send = Half::Closed;
                c.remove_if_done(stream);
                return Ok(Sent { accepted: written, written });
            }
        }
        let rest = &data[written..];
        let take = rest.len().min(room - s.queue.len());
        s.queue.extend(&rest[..take]);
        if end_stream && take == rest.len() {
            s.end_queued = true;
        }
        if (!s.queue.is_empty() || s.end_queued) && !s.pending {
            s.pending = true;
            c.pending.push_back(stream);
        }
        Ok(Sent { accepted: written + take, written })
    }

    /// Resets `stream` (RST_STREAM with `code`), dropping what is queued for it. Nothing
    /// happens for a stream already gone.
    pub fn reset(&mut self, stream: StreamId, code: ErrorCode) {
        let c = &mut self.c;
        if c.error.is_some() || c.streams.get(stream).is_none() {
            return;
        }
        frame::write_rst_stream(&mut c.out, stream, code);
        c.streams.close(stream, Closure::ResetByUs);
    }

    /// The application is done with `stream`. One whose outgoing side was not ended is reset
    /// (CANCEL) and its queue dropped; one whose end is queued keeps it, and once it is out a
    /// peer still sending is told to stop with RST_STREAM NO_ERROR (RFC 9113 section 8.1), as
    /// is one whose end already went. Nothing happens for a stream already gone.
    pub fn finish(&mut self, stream: StreamId) {
        let c = &mut self.c;
        if c.error.is_some() {
            return;
        }
        let Some(s) = c.streams.get_mut(stream) else { return };
        if s.send == Half::Closed {
            if s.recv != Half::Closed {
                frame::write_rst_stream(&mut c.out, stream, ErrorCode::NO_ERROR);
                c.streams.close(stream, Closure::ResetByUs);
            }
        } else if s.end_queued {
            s.finish_when_sent = true;
        } else {
            frame::write_rst_stream(&mut c.out, stream, ErrorCode::CANCEL);
            c.streams.close(stream, Closure::ResetByUs);
        }
    }

    /// Gives back `n` bytes of receive credit for DATA of `stream` the application consumed.
    /// WINDOW_UPDATE frames go out once half a window has been released, so a reader that
    /// does not consume stops its writer, and one that does is never held up. Credit for a
    /// stream that has ended still returns to the connection.
    pub fn release(&mut self, stream: StreamId, n: usize) {
        if self.c.error.is_none() {
            self.c.release(stream, n);
        }
    }

    /// Sends a PING; its answer is reported as [`super::Event::Pong`].
    pub fn ping(&mut self, data: [u8; 8]) {
        if self.c.error.is_none() {
            frame::write_ping(&mut self.c.out, false, data);
        }
    }

    /// Sends GOAWAY. With NO_ERROR a graceful shutdown: streams already open finish, later ones
    /// are refused, and the connection is finished once none is left. With another code the
    /// connection fails at once.
    pub fn go_away(&mut self, code: ErrorCode) {
        let c = &mut self.c;
        if c.error.is_some() {
            return;
        }
        if code != ErrorCode::NO_ERROR {
            c.fail(code, Cause::Local);
            return;
        }
        if c.goaway_sent.is_none() {
            let last = match c.role {
                Role::Server => c.last_accepted,
                Role::Client => StreamId::ZERO,
            };
            frame::write_goaway(&mut c.out, last, code, b"");
            c.goaway_sent = Some(last);
        }
    }

    /// Takes the write buffer's bytes to send, leaving `spare` (cleared) in its place: two
    /// buffers swap with no copy and no allocation once both have grown. Queued DATA the
    /// windows allow then moves into the fresh buffer.
    pub fn take_out(&mut self, mut spare: Vec<u8>) -> Vec<u8> {
        spare.clear();
        let out = std::mem::replace(&mut self.c.out, spare);
        self.c.flush_pending();
        out
    }

    /// The next report of queued DATA that was written since the last call: the stream and
    /// how many bytes (return them to whoever supplied them).
    pub fn take_sent(&mut self) -> Option<(StreamId, usize)> {
        self.c.sent.pop_front()
    }
}

impl Core {
    /// Writes a field block in place: HEADERS (and CONTINUATION frames when it is longer
    /// than the peer's SETTINGS_MAX_FRAME_SIZE), `:status` first when given. Returns whether
    /// the block is a HEAD request (its response carries no body whatever its length says).
    fn write_block<'f>(
        &mut self,
        stream: StreamId,
        status: Option<u16>,
        fields: impl IntoIterator<Item = Field<'f>>,
        end_stream: bool,
    ) -> bool {
        let head = PendingHeaders::begin(&mut self.out, stream);
        self.encoder.begin_block(&mut self.out);
        if let Some(status) = status {
            self.encoder.encode_status(status, &mut self.out);
        }
        let mut head_request = false;
        for f in fields {
            head_request |= f.name == b":method" && f.value == b"HEAD";
            self.encoder.encode_field(&f, &mut self.out);
        }
        head.finish(&mut self.out, end_stream, self.peer.max_frame_size);
        head_request
    }

    /// Moves queued DATA of `stream` into the write buffer as far as the windows and the
    /// buffer allow, then its trailers or END_STREAM when all is out. Returns whether
    /// something is still queued.
    pub(super) fn flush_stream(&mut self, stream: StreamId) -> bool {
        let max_frame = self.peer.max_frame_size as i64;
        let max_buffer = self.config.max_write_buffer;
        let Some(s) = self.streams.get_mut(stream) else { return false };
        let mut moved = 0;
        while !s.queue.is_empty() && self.out.len() < max_buffer {
            let allowed = s.send_window.min(self.send_window).min(max_frame);
            if allowed <= 0 {
                break;
            }
            let n = (allowed as usize).min(s.queue.len());
            let last = s.end_queued && s.trailers.is_none() && n == s.queue.len();
            frame::write_data_header(&mut self.out, stream, n, last);
            let (a, b) = s.queue.as_slices();
            let from_a = n.min(a.len());
            self.out.extend_from_slice(&a[..from_a]);
            self.out.extend_from_slice(&b[..n - from_a]);
            s.queue.drain(..n);
            s.send_window -= n as i64;
            self.send_window -= n as i64;
            self.guard.data_sent();
            moved += n;
            if last {
                s.send = Half::Closed;
            }
        }
        if s.queue.is_empty() && s.end_queued && s.send != Half::Closed {
            s.send = Half::Closed;
            match s.trailers.take() {
                Some(block) => {
                    let head = PendingHeaders::begin(&mut self.out, stream);
                    self.encoder.begin_block(&mut self.out);
                    self.out.extend_from_slice(&block);
                    head.finish(&mut self.out, true, self.peer.max_frame_size);
                }
                None => frame::write_data(&mut self.out, stream, b"", true),
            }
        }
        let waiting = !s.queue.is_empty();
        let stop_peer = s.finish_when_sent && s.send == Half::Closed && s.recv != Half::Closed;
        if moved > 0 {
            self.sent.push_back((stream, moved));
        }
        if stop_peer {
            frame::write_rst_stream(&mut self.out, stream, ErrorCode::NO_ERROR);
            self.streams.close(stream, Closure::ResetByUs);
            return false;
        }
        self.remove_if_done(stream);
        waiting
    }

    /// Moves queued DATA of every waiting stream, in turn, as far as the connection window
    /// and the write buffer allow.
    pub(super) fn flush_pending(&mut self) {
        for _ in 0..self.pending.len() {
            if self.error.is_some() || self.send_window <= 0 || self.out_full() {
                break;
            }
            let Some(stream) = self.pending.pop_front() else { break };
            if self.flush_stream(stream) {
                self.pending.push_back(stream);
            } else if let Some(s) = self.streams.get_mut(stream) {
                s.pending = false;
            }
        }
    }

    /// Credit for `n` consumed bytes of `stream` (and of the connection), returned with
    /// WINDOW_UPDATE once half a window is due; never beyond the window we advertised.
    pub(super) fn release(&mut self, stream: StreamId, n: usize) {
        self.release_connection(n);
        let window = i64::from(self.config.initial_stream_window);
        let Some(s) = self.streams.get_mut(stream) else { return };
        if s.recv == Half::Closed {
            return;
        }
        let n = u32::try_from(n).unwrap_or(u32::MAX);
        s.recv_unacked = s.recv_unacked.saturating_add(n);
        if i64::from(s.recv_unacked) >= window / 2 {
            let increment = i64::from(s.recv_unacked).min(window - s.recv_window);
            s.recv_unacked = 0;
            if increment > 0 {
                s.recv_window += increment;
                frame::write_window_update(&mut self.out, stream, increment as u32);
            }
        }
    }

    /// Connection credit for `n` consumed (or discarded) bytes.
    pub(super) fn release_connection(&mut self, n: usize) {
        let window = i64::from(self.config.initial_connection_window);
        let n = u32::try_from(n).unwrap_or(u32::MAX);
        self.recv_unacked = self.recv_unacked.saturating_add(n);
        if i64::from(self.recv_unacked) >= window / 2 {
            let increment = i64::from(self.recv_unacked).min(window - self.recv_window);
            self.recv_unacked = 0;
            if increment > 0 {
                self.recv_window += increment;
                frame::write_window_update(&mut self.out, StreamId::ZERO, increment as u32);
            }
        }
    }
}
