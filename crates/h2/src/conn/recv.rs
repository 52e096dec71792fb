//! Receiving: one frame per [`Connection::recv`] call, parsed in place and applied to the
//! connection and stream states (RFC 9113 sections 5, 6 and 8), with the defences counted as
//! frames pass.

use super::stream::{Closure, Half, Stream};
use super::{
    Cause, ConnError, Connection, Continuation, Core, Event, Flood, Malformed, Note, Received, Role,
};
use crate::frame::{self, ErrorCode, Frame, FrameError, Setting, Settings, StreamId};
use crate::hpack::{Decoder, HeaderBlock};
use crate::validate::{self, RequestPseudo};

/// A field block's decoding: the fields, or `Err` when the list exceeded our limit (the
/// HPACK state is intact; the stream is refused).
type Decoded<'a> = Result<HeaderBlock<'a>, ()>;

impl Connection {
    /// Handles the frame at the front of `input` (the connection's read buffer), or a pending
    /// event, and says how many bytes were consumed and what happened.
    ///
    /// Call it again while it consumes input or reports an event; a call that does neither
    /// ([`Received::is_idle`]) needs more input, or a flush first when
    /// [`Connection::wants_read`] is false. A connection error writes GOAWAY to the write
    /// buffer and is returned by this and every later call.
    pub fn recv<'a>(&'a mut self, input: &'a [u8]) -> Result<Received<'a>, ConnError> {
        let c = &mut self.c;
        if let Some(e) = c.error {
            return Err(e);
        }
        if let Some(note) = c.notes.pop_front() {
            return Ok(Received { used: 0, event: Some(note.event()) });
        }
        if c.out_full() {
            return Ok(Received { used: 0, event: None });
        }
        if c.preface_pending {
            return c.preface(input).map(|used| Received { used, event: None });
        }
        let (frame, used) = match frame::parse(input, c.config.max_frame_size) {
            Ok(Some(parsed)) => parsed,
            Ok(None) => return Ok(Received { used: 0, event: None }),
            Err(FrameError::Connection { code, violation, .. }) => {
                return Err(c.fail(code, Cause::Frame(violation)));
            }
            Err(FrameError::Stream { stream_id, code, frame_len, .. }) => {
                if c.continuation.is_some() {
                    return Err(c.fail(ErrorCode::PROTOCOL_ERROR, Cause::Continuation));
                }
                if !c.ready {
                    return Err(c.fail(ErrorCode::PROTOCOL_ERROR, Cause::NoSettings));
                }
                let event = c.stream_error(stream_id, code)?;
                return Ok(Received { used: frame_len, event });
            }
        };
        if let Some(cont) = c.continuation
            && !matches!(frame, Frame::Continuation { stream_id, .. } if stream_id == cont.stream)
        {
            return Err(c.fail(ErrorCode::PROTOCOL_ERROR, Cause::Continuation));
        }
        if !c.ready && !matches!(frame, Frame::Settings(s) if !s.is_ack()) {
            return Err(c.fail(ErrorCode::PROTOCOL_ERROR, Cause::NoSettings));
        }
        let event = match frame {
            Frame::Data { stream_id, end_stream, data, padding } => {
                c.on_data(stream_id, end_stream, data, padding)?
            }
            Frame::Headers { stream_id, end_stream, end_headers, priority, block, .. } => {
                let self_dependent = priority.is_some_and(|p| p.dependency == stream_id);
                self.on_headers(stream_id, end_stream, end_headers, self_dependent, block)?
            }
            Frame::Continuation { end_headers, block, .. } => {
                self.on_continuation(end_headers, block)?
            }
            Frame::Priority { .. } => {
                c.guard.priority().map_err(|f| c.calm(f))?;
                None
            }
            Frame::RstStream { stream_id, code } => c.on_reset(stream_id, code)?,
            Frame::Settings(s) if s.is_ack() => {
                if !c.acked {
                    c.acked = true;
                    self.decoder.set_max_table_size(c.config.header_table_size as usize);
                }
                None
            }
            Frame::Settings(s) => c.on_settings(s)?,
            Frame::PushPromise { .. } => {
                return Err(c.fail(ErrorCode::PROTOCOL_ERROR, Cause::Push));
            }
            Frame::Ping { ack: true, data } => Some(Event::Pong { data }),
            Frame::Ping { ack: false, data } => {
                c.guard.control(c.now).map_err(|f| c.calm(f))?;
                frame::write_ping(&mut c.out, true, data);
                None
            }
            Frame::GoAway { last_stream_id, code, debug_data } => {
                c.on_goaway(last_stream_id);
                Some(Event::GoAway { last_stream_id, code, debug_data })
            }
            Frame::WindowUpdate { stream_id, increment } => {
                c.on_window_update(stream_id, increment)?
            }
            Frame::Unknown { .. } => {
                c.guard.control(c.now).map_err(|f| c.calm(f))?;
                None
            }
        };
        Ok(Received { used, event })
    }

    /// The first fragment of a field block.
    fn on_headers<'a>(
        &'a mut self,
        stream: StreamId,
        end_stream: bool,
        end_headers: bool,
        self_dependent: bool,
        block: &'a [u8],
    ) -> Result<Option<Event<'a>>, ConnError> {
        let c = &mut self.c;
        c.check_new_block(stream)?;
        if !end_headers {
            if block.is_empty() {
                c.guard.empty(c.now).map_err(|f| c.calm(f))?;
            }
            self.block.clear();
            self.block.extend_from_slice(block);
            c.continuation = Some(Continuation { stream, end_stream, self_dependent, frames: 0 });
            return Ok(None);
        }
        let Connection { decoder, c, .. } = self;
        complete(decoder, c, stream, end_stream, self_dependent, block)
    }

    /// A further fragment of the field block being assembled.
    fn on_continuation<'a>(
        &'a mut self,
        end_headers: bool,
        fragment: &[u8],
    ) -> Result<Option<Event<'a>>, ConnError> {
        let c = &mut self.c;
        let Some(mut cont) = c.continuation else {
            return Err(c.fail(ErrorCode::PROTOCOL_ERROR, Cause::Continuation));
        };
        cont.frames += 1;
        if cont.frames > c.config.limits.max_continuation_frames {
            return Err(c.calm(Flood::Continuations));
        }
        if fragment.is_empty() && !end_headers {
            c.guard.empty(c.now).map_err(|f| c.calm(f))?;
        }
        if self.block.len() + fragment.len() > c.config.max_block() {
            return Err(c.calm(Flood::HeaderBlock));
        }
        self.block.extend_from_slice(fragment);
        if !end_headers {
            c.continuation = Some(cont);
            return Ok(None);
        }
        c.continuation = None;
        let Connection { decoder, block, c } = self;
        complete(decoder, c, cont.stream, cont.end_stream, cont.self_dependent, block)
    }
}

/// Decodes a complete field block and applies it to its stream.
fn complete<'a>(
    decoder: &'a mut Decoder,
    c: &mut Core,
    stream: StreamId,
    end_stream: bool,
    self_dependent: bool,
    block: &'a [u8],
) -> Result<Option<Event<'a>>, ConnError> {
    let decoded = match decoder.decode(block) {
        Ok(fields) => Ok(fields),
        Err(e) if e.is_connection_error() => {
            return Err(c.fail(ErrorCode::COMPRESSION_ERROR, Cause::Hpack(e)));
        }
        Err(_) => Err(()),
    };
    match c.role {
        Role::Server => c.server_headers(stream, end_stream, self_dependent, decoded),
        Role::Client => c.client_headers(stream, end_stream, self_dependent, decoded),
    }
}

/// What a valid request head says beyond its pseudo-header fields.
struct RequestHead<'a> {
    pseudo: RequestPseudo<'a>,
    content_length: Option<u64>,
}

/// Checks a request head: RFC 9113 section 8 through [`validate::request`], `:protocol` only
/// when `connect_protocol` (we enabled extended CONNECT), then `host` against `:authority`,
/// `content-length`, and a non-empty declared body on a head that ends the stream.
fn request_head<'a>(
    fields: HeaderBlock<'a>,
    end_stream: bool,
    self_dependent: bool,
    connect_protocol: bool,
) -> Result<RequestHead<'a>, Malformed> {
    if self_dependent {
        return Err(Malformed::SelfDependency);
    }
    let pseudo = validate::request(fields.iter())?;
    if pseudo.protocol.is_some() && !connect_protocol {
        return Err(Malformed::ExtendedConnect);
    }
    let content_length = content_length_and_host(fields, pseudo.authority)?;
    if end_stream && content_length.is_some_and(|n| n > 0) {
        return Err(Malformed::LengthMismatch);
    }
    Ok(RequestHead { pseudo, content_length })
}

/// A valid response head's status and declared length.
struct ResponseHead {
    status: u16,
    content_length: Option<u64>,
}

/// Checks a response head: RFC 9113 section 8 through [`validate::response`], informational
/// heads (no END_STREAM, no 101), `content-length`.
fn response_head(
    fields: HeaderBlock<'_>,
    end_stream: bool,
    self_dependent: bool,
) -> Result<ResponseHead, Malformed> {
    if self_dependent {
        return Err(Malformed::SelfDependency);
    }
    let status = validate::response(fields.iter())?.status;
    if status < 200 && (end_stream || status == 101) {
        return Err(Malformed::Informational);
    }
    Ok(ResponseHead { status, content_length: content_length_and_host(fields, None)? })
}

/// The `content-length` of a field block: digits only, every copy the same. A request's
/// `:authority` is passed as `authority`: any `host` must then agree with it (checked in the
/// same walk over the fields).
fn content_length_and_host(
    fields: HeaderBlock<'_>,
    authority: Option<&[u8]>,
) -> Result<Option<u64>, Malformed> {
    let mut length = None;
    for f in fields.iter() {
        match f.name {
            b"content-length" => {
                let v = f.value;
                if v.is_empty() || v.len() > 19 || !v.iter().all(u8::is_ascii_digit) {
                    return Err(Malformed::ContentLength);
                }
                let n = v.iter().fold(0u64, |n, d| n * 10 + u64::from(d - b'0'));
                if length.replace(n).is_some_and(|m| m != n) {
                    return Err(Malformed::ContentLength);
                }
            }
            b"host" if authority.is_some_and(|a| !f.value.eq_ignore_ascii_case(a)) => {
                return Err(Malformed::HostMismatch);
            }
            _ => {}
        }
    }
    Ok(length)
}

impl Core {
    /// Server: reads the client preface; `Ok(0)` while only a correct prefix is in.
    fn preface(&mut self, input: &[u8]) -> Result<usize, ConnError> {
        let n = input.len().min(frame::PREFACE.len());
        if input[..n] != frame::PREFACE[..n] {
            return Err(self.fail(ErrorCode::PROTOCOL_ERROR, Cause::Preface));
        }
        if n < frame::PREFACE.len() {
            return Ok(0);
        }
        self.preface_pending = false;
        Ok(n)
    }

    /// Whether `stream` was never opened: above the peer's highest or ours, or of the wrong
    /// parity (a server never opens streams here: push is refused).
    fn is_idle(&self, stream: StreamId) -> bool {
        match self.role {
            Role::Server => !stream.is_client_initiated() || stream > self.last_peer_id,
            Role::Client => !stream.is_client_initiated() || stream.get() >= self.next_local_id,
        }
    }

    /// The connection errors a field block's stream identifier alone decides, before the
    /// block is decoded.
    fn check_new_block(&mut self, stream: StreamId) -> Result<(), ConnError> {
        let bad = match self.role {
            // Clients open odd streams only.
            Role::Server => !stream.is_client_initiated(),
            // A server sends field blocks only on streams we opened.
            Role::Client => self.is_idle(stream),
        };
        if bad {
            let cause = if self.role == Role::Server { Cause::StreamId } else { Cause::IdleStream };
            return Err(self.fail(ErrorCode::PROTOCOL_ERROR, cause));
        }
        Ok(())
    }

    /// A complete field block from a client.
    fn server_headers<'a>(
        &mut self,
        stream: StreamId,
        end_stream: bool,
        self_dependent: bool,
        decoded: Decoded<'a>,
    ) -> Result<Option<Event<'a>>, ConnError> {
        if let Some(s) = self.streams.get(stream) {
            if s.recv == Half::Closed {
                return self.stream_error(stream, ErrorCode::STREAM_CLOSED);
            }
            return self.trailers(stream, end_stream, decoded);
        }
        if stream <= self.last_peer_id {
            return self.closed_headers(stream);
        }
        self.last_peer_id = stream;
        if self.goaway_sent.is_some_and(|last| stream > last) {
            // Opened after our GOAWAY: ignored (the peer learns it was not processed).
            self.streams.remember(stream, Closure::ResetByUs);
            return Ok(None);
        }
        let Ok(fields) = decoded else {
            self.too_large(stream, end_stream)?;
            return Ok(None);
        };
        let connect_protocol = self.config.enable_connect_protocol;
        let Ok(head) = request_head(fields, end_stream, self_dependent, connect_protocol) else {
            return self.refuse(stream, ErrorCode::PROTOCOL_ERROR).map(|()| None);
        };
        if self.streams.len() >= self.config.max_concurrent_streams as usize {
            return self.refuse(stream, ErrorCode::REFUSED_STREAM).map(|()| None);
        }
        let mut s = Stream::new(self.config.initial_stream_window, self.peer.initial_window);
        s.recv_final = true;
        s.recv_length = head.content_length;
        if end_stream {
            s.recv = Half::Closed;
        }
        self.streams.insert(stream, s);
        self.guard.stream_opened();
        self.last_accepted = stream;
        Ok(Some(Event::Request { stream, head: head.pseudo, fields, end_stream }))
    }

    /// A complete field block from a server: a response head (informational or final) or
    /// trailers.
    fn client_headers<'a>(
        &mut self,
        stream: StreamId,
        end_stream: bool,
        self_dependent: bool,
        decoded: Decoded<'a>,
    ) -> Result<Option<Event<'a>>, ConnError> {
        let Some(s) = self.streams.get(stream) else {
            return self.closed_headers(stream);
        };
        if s.recv == Half::Closed {
            return self.stream_error(stream, ErrorCode::STREAM_CLOSED);
        }
        if s.recv_final {
            return self.trailers(stream, end_stream, decoded);
        }
        let head_request = s.no_body;
        let head = match decoded {
            Ok(fields) => response_head(fields, end_stream, self_dependent).map(|h| (h, fields)),
            Err(()) => Err(Malformed::Sequence),
        };
        let Ok((head, fields)) = head else {
            return self.stream_error(stream, ErrorCode::PROTOCOL_ERROR);
        };
        let status = head.status;
        if status >= 200 {
            let no_body = head_request || status == 204 || status == 304;
            if end_stream && !no_body && head.content_length.is_some_and(|n| n > 0) {
                return self.stream_error(stream, ErrorCode::PROTOCOL_ERROR);
            }
            if let Some(s) = self.streams.get_mut(stream) {
                s.recv_final = true;
                s.no_body = no_body;
                s.recv_length = head.content_length;
                if end_stream {
                    s.recv = Half::Closed;
                }
            }
            if end_stream {
                self.remove_if_done(stream);
            }
        }
        Ok(Some(Event::Response { stream, status, fields, end_stream }))
    }

    /// A field block for a stream no longer live.
    fn closed_headers<'a>(&mut self, stream: StreamId) -> Result<Option<Event<'a>>, ConnError> {
        match self.streams.closure(stream) {
            // We reset it: the peer may not have seen that yet.
            Some(Closure::ResetByUs) => Ok(None),
            Some(Closure::ResetByPeer) => self.stream_error(stream, ErrorCode::STREAM_CLOSED),
            Some(Closure::Ended) => Err(self.fail(ErrorCode::STREAM_CLOSED, Cause::ClosedStream)),
            // Too old to be remembered, or never opened: a reused or regressing identifier.
            None => Err(self.fail(ErrorCode::PROTOCOL_ERROR, Cause::StreamId)),
        }
    }

    /// Trailers on an open stream: they must end it and carry no pseudo-header fields.
    fn trailers<'a>(
        &mut self,
        stream: StreamId,
        end_stream: bool,
        decoded: Decoded<'a>,
    ) -> Result<Option<Event<'a>>, ConnError> {
        let valid = match decoded {
            Ok(fields) if end_stream && validate::trailers(fields.iter()).is_ok() => Some(fields),
            _ => None,
        };
        let length_ok = self
            .streams
            .get(stream)
            .is_some_and(|s| s.no_body || s.recv_length.is_none_or(|n| n == s.recv_total));
        let (Some(fields), true) = (valid, length_ok) else {
            return self.stream_error(stream, ErrorCode::PROTOCOL_ERROR);
        };
        if let Some(s) = self.streams.get_mut(stream) {
            s.recv = Half::Closed;
        }
        self.remove_if_done(stream);
        Ok(Some(Event::Trailers { stream, fields }))
    }

    /// Server: a request head over our header list limit: answered 431 (the HPACK state is
    /// intact), counted like a reset.
    fn too_large(&mut self, stream: StreamId, end_stream: bool) -> Result<(), ConnError> {
        self.guard.reset(self.now).map_err(|f| self.calm(f))?;
        let head = frame::PendingHeaders::begin(&mut self.out, stream);
        self.encoder.encode_status(431, &mut self.out);
        head.finish(&mut self.out, true, self.peer.max_frame_size);
        if end_stream {
            self.streams.remember(stream, Closure::Ended);
        } else {
            // The response is complete: the client need not send its body.
            frame::write_rst_stream(&mut self.out, stream, ErrorCode::NO_ERROR);
            self.streams.remember(stream, Closure::ResetByUs);
        }
        self.last_accepted = stream;
        Ok(())
    }

    /// Refuses a stream the application never saw with RST_STREAM, counted like a reset.
    fn refuse(&mut self, stream: StreamId, code: ErrorCode) -> Result<(), ConnError> {
        self.guard.reset(self.now).map_err(|f| self.calm(f))?;
        frame::write_rst_stream(&mut self.out, stream, code);
        self.streams.remember(stream, Closure::ResetByUs);
        Ok(())
    }

    /// A stream error (RFC 9113 section 5.4.2): RST_STREAM with `code`, counted against the
    /// reset rate (a peer provoking resets is the MadeYouReset attack). A stream the
    /// application knows is reported reset.
    pub(super) fn stream_error<'a>(
        &mut self,
        stream: StreamId,
        code: ErrorCode,
    ) -> Result<Option<Event<'a>>, ConnError> {
        self.guard.reset(self.now).map_err(|f| self.calm(f))?;
        frame::write_rst_stream(&mut self.out, stream, code);
        let known = self.streams.close(stream, Closure::ResetByUs).is_some();
        Ok(known.then_some(Event::Reset { stream, code, remote: false }))
    }

    /// Drops a stream whose both directions ended and whose queue is empty.
    pub(super) fn remove_if_done(&mut self, stream: StreamId) {
        if self.streams.get(stream).is_some_and(Stream::is_done) {
            self.streams.close(stream, Closure::Ended);
        }
    }

    fn on_data<'a>(
        &mut self,
        stream: StreamId,
        end_stream: bool,
        data: &'a [u8],
        padding: Option<u8>,
    ) -> Result<Option<Event<'a>>, ConnError> {
        // At most 2^24-1 + 256: no overflow.
        let len = data.len() + padding.map_or(0, |p| usize::from(p) + 1);
        if len as i64 > self.recv_window {
            return Err(self.fail(ErrorCode::FLOW_CONTROL_ERROR, Cause::FlowControl));
        }
        self.recv_window -= len as i64;
        if data.is_empty() && !end_stream {
            self.guard.empty(self.now).map_err(|f| self.calm(f))?;
        }
        let role = self.role;
        let Some(s) = self.streams.get_mut(stream) else {
            // Nobody will consume it: the connection credit goes back at once.
            self.release_connection(len);
            if self.is_idle(stream) {
                return Err(self.fail(ErrorCode::PROTOCOL_ERROR, Cause::IdleStream));
            }
            if self.streams.closure(stream) == Some(Closure::ResetByUs) {
                self.guard.control(self.now).map_err(|f| self.calm(f))?;
                return Ok(None);
            }
            return self.stream_error(stream, ErrorCode::STREAM_CLOSED);
        };
        let error = if s.recv == Half::Closed {
            Some(ErrorCode::STREAM_CLOSED)
        } else if role == Role::Client && !s.recv_final {
            // DATA before the response head.
            Some(ErrorCode::PROTOCOL_ERROR)
        } else if len as i64 > s.recv_window {
            Some(ErrorCode::FLOW_CONTROL_ERROR)
        } else {
            s.recv_window -= len as i64;
            s.recv_total += data.len() as u64;
            let length_broken = !s.no_body
                && s.recv_length
                    .is_some_and(|n| s.recv_total > n || (end_stream && s.recv_total != n));
            if length_broken {
                Some(ErrorCode::PROTOCOL_ERROR)
            } else {
                if end_stream {
                    s.recv = Half::Closed;
                }
                None
            }
        };
        if let Some(code) = error {
            self.release_connection(len);
            return self.stream_error(stream, code);
        }
        if len > data.len() {
            // Padding is never handed to the application: its credit goes back now.
            self.release(stream, len - data.len());
        }
        if end_stream {
            self.remove_if_done(stream);
        } else if data.is_empty() {
            return Ok(None);
        }
        Ok(Some(Event::Data { stream, data, end_stream }))
    }

    fn on_reset<'a>(
        &mut self,
        stream: StreamId,
        code: ErrorCode,
    ) -> Result<Option<Event<'a>>, ConnError> {
        let Some(s) = self.streams.get(stream) else {
            if self.is_idle(stream) {
                return Err(self.fail(ErrorCode::PROTOCOL_ERROR, Cause::IdleStream));
            }
            self.guard.control(self.now).map_err(|f| self.calm(f))?;
            return Ok(None);
        };
        // A reset before the final response is what a rapid-reset attack is made of.
        let early = match self.role {
            Role::Server => !s.send_final,
            Role::Client => !s.recv_final,
        };
        if early {
            self.guard.reset(self.now).map_err(|f| self.calm(f))?;
        }
        self.streams.close(stream, Closure::ResetByPeer);
        Ok(Some(Event::Reset { stream, code, remote: true }))
    }

    fn on_settings<'a>(&mut self, settings: Settings<'_>) -> Result<Option<Event<'a>>, ConnError> {
        self.guard.control(self.now).map_err(|f| self.calm(f))?;
        for setting in settings.iter() {
            match setting {
                Setting::HeaderTableSize(size) => self.encoder.set_peer_table_size(size),
                Setting::EnablePush(true) if self.role == Role::Client => {
                    return Err(self.fail(ErrorCode::PROTOCOL_ERROR, Cause::EnablePush));
                }
                Setting::MaxConcurrentStreams(n) => self.peer.max_concurrent_streams = n,
                Setting::InitialWindowSize(size) => {
                    let delta = i64::from(size) - i64::from(self.peer.initial_window);
                    self.peer.initial_window = size;
                    let max = i64::from(frame::MAX_WINDOW_SIZE);
                    let mut overflow = false;
                    for (_, s) in self.streams.iter_mut() {
                        s.send_window += delta;
                        overflow |= s.send_window > max;
                    }
                    if overflow {
                        return Err(self.fail(ErrorCode::FLOW_CONTROL_ERROR, Cause::WindowOverflow));
                    }
                }
                Setting::MaxFrameSize(size) => self.peer.max_frame_size = size,
                _ => {}
            }
        }
        frame::write_settings_ack(&mut self.out);
        self.ready = true;
        self.flush_pending();
        Ok(Some(Event::Settings))
    }

    fn on_goaway(&mut self, last: StreamId) {
        let last = self.goaway_received.map_or(last, |prev| prev.min(last));
        self.goaway_received = Some(last);
        if self.role == Role::Server {
            // The last stream a GOAWAY names is one of ours, and a server here opens none.
            return;
        }
        let mut refused: Vec<StreamId> =
            self.streams.ids().into_iter().filter(|&id| id > last).collect();
        refused.sort_unstable();
        for stream in refused {
            self.streams.close(stream, Closure::ResetByPeer);
            let code = ErrorCode::REFUSED_STREAM;
            self.notes.push_back(Note::Reset { stream, code, remote: true });
        }
    }

    fn on_window_update<'a>(
        &mut self,
        stream: StreamId,
        increment: u32,
    ) -> Result<Option<Event<'a>>, ConnError> {
        self.guard.window_update().map_err(|f| self.calm(f))?;
        let max = i64::from(frame::MAX_WINDOW_SIZE);
        if stream.is_zero() {
            self.send_window += i64::from(increment);
            if self.send_window > max {
                return Err(self.fail(ErrorCode::FLOW_CONTROL_ERROR, Cause::WindowOverflow));
            }
            self.flush_pending();
            return Ok(None);
        }
        let Some(s) = self.streams.get_mut(stream) else {
            if self.is_idle(stream) {
                return Err(self.fail(ErrorCode::PROTOCOL_ERROR, Cause::IdleStream));
            }
            // Credit for a stream that just ended: common, harmless.
            return Ok(None);
        };
        s.send_window += i64::from(increment);
        if s.send_window > max {
            return self.stream_error(stream, ErrorCode::FLOW_CONTROL_ERROR);
        }
        self.flush_stream(stream);
        Ok(None)
    }
}
