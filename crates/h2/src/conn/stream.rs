//! The streams of one connection (RFC 9113 section 5.1): each direction's state, flow-control
//! windows and the bytes waiting for the peer's window, plus a short memory of streams that
//! closed, so a late frame on one is told apart from a frame on a stream never opened.

use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasherDefault, Hasher};

use crate::frame::StreamId;

/// How many closed streams are remembered (and how).
const CLOSED_MEMORY: usize = 128;

/// What one direction of a stream is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Half {
    /// The direction is open (its head may still be to come).
    Open,
    /// END_STREAM went (or came): nothing more in this direction.
    Closed,
}

/// One stream's state on this connection.
#[derive(Debug)]
pub(super) struct Stream {
    /// What we receive from the peer.
    pub(super) recv: Half,
    /// What we send to the peer.
    pub(super) send: Half,
    /// A final (non-informational) head was received.
    pub(super) recv_final: bool,
    /// A final head was sent.
    pub(super) send_final: bool,
    /// Credit the peer has left to send on this stream.
    pub(super) recv_window: i64,
    /// Bytes the application released that were not yet returned with a WINDOW_UPDATE.
    pub(super) recv_unacked: u32,
    /// Content-length the peer declared for what it sends, and how much DATA came.
    pub(super) recv_length: Option<u64>,
    pub(super) recv_total: u64,
    /// Credit we have left to send on this stream (negative after a SETTINGS decrease).
    pub(super) send_window: i64,
    /// DATA accepted from the application and not yet written (waiting for window or room).
    pub(super) queue: VecDeque<u8>,
    /// END_STREAM goes with the last queued byte (or the pending trailers).
    pub(super) end_queued: bool,
    /// A trailers block (encoded without a table size update) waiting for the queue to drain.
    pub(super) trailers: Option<Vec<u8>>,
    /// The stream is in the connection's list of streams with something queued.
    pub(super) pending: bool,
    /// The request was HEAD, or the response 204/304: a content-length says nothing of DATA.
    pub(super) no_body: bool,
    /// The application is done with the stream: once its queued end is out, a peer still
    /// sending is told to stop (RST_STREAM NO_ERROR).
    pub(super) finish_when_sent: bool,
}

impl Stream {
    pub(super) fn new(recv_window: u32, send_window: u32) -> Stream {
        Stream {
            recv: Half::Open,
            send: Half::Open,
            recv_final: false,
            send_final: false,
            recv_window: i64::from(recv_window),
            recv_unacked: 0,
            recv_length: None,
            recv_total: 0,
            send_window: i64::from(send_window),
            queue: VecDeque::new(),
            end_queued: false,
            trailers: None,
            pending: false,
            no_body: false,
            finish_when_sent: false,
        }
    }

    /// Both directions are over and nothing waits to be written.
    pub(super) fn is_done(&self) -> bool {
        self.recv == Half::Closed && self.send == Half::Closed && self.queue.is_empty()
    }

    /// Bytes of DATA accepted from the application and not yet written.
    pub(super) fn queued(&self) -> usize {
        self.queue.len()
    }

    /// Whether we may still send DATA: a final head went and no end of stream was queued.
    pub(super) fn can_send_data(&self) -> bool {
        self.send == Half::Open && self.send_final && !self.end_queued
    }
}

/// How a stream no longer in the map ended: it decides what a late frame on it means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Closure {
    /// Both sides ended it with END_STREAM.
    Ended,
    /// The peer reset it: a later frame is a STREAM_CLOSED stream error.
    ResetByPeer,
    /// We reset it (or refused it, or ignored it after GOAWAY): frames the peer sent before
    /// it saw our RST_STREAM are ignored.
    ResetByUs,
}

/// A hasher for stream identifiers: they are distinct small integers, so one multiply
/// spreads them well; no SipHash per frame. Not for keys a peer chooses freely in a map that
/// could grow without bound (identifiers are bounded by the concurrency limit here).
#[derive(Debug, Default, Clone, Copy)]
pub struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 << 8 | u64::from(b)).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        }
    }

    fn write_u32(&mut self, id: u32) {
        self.0 = u64::from(id).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }
}

/// The streams of a connection: the live ones by identifier, and the last closed ones.
#[derive(Debug, Default)]
pub(super) struct Streams {
    live: HashMap<u32, Stream, BuildHasherDefault<IdHasher>>,
    closed: VecDeque<(u32, Closure)>,
}

impl Streams {
    pub(super) fn get(&self, id: StreamId) -> Option<&Stream> {
        self.live.get(&id.get())
    }

    pub(super) fn get_mut(&mut self, id: StreamId) -> Option<&mut Stream> {
        self.live.get_mut(&id.get())
    }

    pub(super) fn insert(&mut self, id: StreamId, stream: Stream) {
        self.live.insert(id.get(), stream);
    }

    /// Removes a stream and remembers how it ended.
    pub(super) fn close(&mut self, id: StreamId, how: Closure) -> Option<Stream> {
        let stream = self.live.remove(&id.get());
        self.remember(id, how);
        stream
    }

    /// Remembers a stream that ended (or was never admitted), forgetting the oldest.
    pub(super) fn remember(&mut self, id: StreamId, how: Closure) {
        if self.closed.len() == CLOSED_MEMORY {
            self.closed.pop_front();
        }
        self.closed.push_back((id.get(), how));
    }

    /// How a recently closed stream ended, if it is remembered.
    pub(super) fn closure(&self, id: StreamId) -> Option<Closure> {
        self.closed.iter().rev().find(|(i, _)| *i == id.get()).map(|&(_, how)| how)
    }

    /// Live streams.
    pub(super) fn len(&self) -> usize {
        self.live.len()
    }

    /// Every live stream's identifier, in no particular order.
    pub(super) fn ids(&self) -> Vec<StreamId> {
        self.live.keys().map(|&id| StreamId::new(id)).collect()
    }

    /// Heap bytes held by the queues of live streams.
    pub(super) fn queued_capacity(&self) -> usize {
        self.live
            .values()
            .map(|s| s.queue.capacity() + s.trailers.as_ref().map_or(0, Vec::capacity))
            .sum()
    }

    /// Every live stream, mutably.
    pub(super) fn iter_mut(&mut self) -> impl Iterator<Item = (StreamId, &mut Stream)> {
        self.live.iter_mut().map(|(id, s)| (StreamId::new(*id), s))
    }
}
