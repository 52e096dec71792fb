//! The HTTP/2 floor: the least an HTTP/2 proxy on Fulcrum's runtime and with Fulcrum's own
//! HTTP/2 engine (`fulcrum_h2::conn`, sans-IO) can do per request, for the h2c workload of
//! `bench.sh http` (targets `base-h2c-*` when this example is the baseline build).
//!
//! One thread. One HTTP/2 connection to each backend, opened at start; every client stream
//! goes, round robin, onto one of them and its answer comes back the same way. Each connection
//! has a reader task (read, then hand every event the engine reports to the other side at
//! once) and a writer task (write out what the engine queued, woken by whoever queued it, after
//! one yield as Fulcrum's writer, so that a write carries a whole turn's output). A
//! backend's GOAWAY opens a new connection to it; the old one finishes its streams.
//! The engine does all the protocol work Fulcrum's engine does (framing, HPACK both ways,
//! RFC 9113 section 8 validation, flow control, the flood defences); around it there is
//! nothing: no task or future per stream, no timeouts, no retries, no routing, no header
//! rewriting, no telemetry. Request bodies are refused (REFUSED_STREAM), a DATA frame the
//! client's window does not take whole is cut short. Not a proxy to run: it only shows what an
//! HTTP/2 request costs on this runtime with this engine.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::future::poll_fn;
use std::hash::BuildHasherDefault;
use std::io;
use std::net::SocketAddr;
use std::rc::Rc;
use std::task::{Poll, Waker};

use fulcrum_h2::ErrorCode;
use fulcrum_h2::conn::{Config, Connection, Event, IdHasher, Role};
use fulcrum_h2::frame::StreamId;
use monoio::buf::IoBufMut;
use monoio::io::{AsyncReadRent, AsyncWriteRentExt, OwnedReadHalf, OwnedWriteHalf, Splitable};
use monoio::net::{TcpListener, TcpStream};

/// The read buffer: a whole frame of the default maximum size fits with room to spare.
const BUF: usize = 64 * 1024;

/// One HTTP/2 connection: the engine, and the waker of the task that writes what it queues.
struct Side {
    conn: RefCell<Connection>,
    writer: Cell<Option<Waker>>,
    closed: Cell<bool>,
}

impl Side {
    fn new(role: Role) -> Rc<Side> {
        Rc::new(Side {
            conn: RefCell::new(Connection::new(role, Config::default())),
            writer: Cell::new(None),
            closed: Cell::new(false),
        })
    }

    /// Wakes the writer (it writes only when the engine has queued something).
    fn wake(&self) {
        if let Some(waker) = self.writer.take() {
            waker.wake();
        }
    }
}

/// Where each backend stream's answer goes: the client connection and its stream.
type Routes = HashMap<u32, (Rc<Side>, StreamId), BuildHasherDefault<IdHasher>>;

/// A backend connection and where its streams' answers go.
struct Upstream {
    side: Rc<Side>,
    routes: RefCell<Routes>,
}

/// A backend and its current connection, replaced when the backend sends GOAWAY.
struct Backend {
    addr: SocketAddr,
    up: RefCell<Option<Rc<Upstream>>>,
}

/// Opens a connection to `backend` and makes it the current one; the old one finishes its
/// streams and ends.
async fn open(backend: Rc<Backend>) -> io::Result<()> {
    let stream = TcpStream::connect(backend.addr).await?;
    stream.set_nodelay(true)?;
    let up = Rc::new(Upstream {
        side: Side::new(Role::Client),
        routes: RefCell::new(HashMap::default()),
    });
    let (r, w) = stream.into_split();
    monoio::spawn(write(up.side.clone(), w));
    let (reader, redial) = (up.clone(), backend.clone());
    monoio::spawn(async move {
        let _ = read(&reader.side, r, |event| {
            // Once per connection, though a peer may send GOAWAY twice (graceful, then final):
            // the connection stops being the current one, and one replacement is dialled.
            let current = redial.up.borrow().as_ref().is_some_and(|up| Rc::ptr_eq(up, &reader));
            if current && matches!(event, Event::GoAway { .. }) {
                *redial.up.borrow_mut() = None;
                monoio::spawn(open(redial.clone()));
            }
            answer(&reader, event)
        })
        .await;
        reader.side.closed.set(true);
        reader.side.wake();
    });
    *backend.up.borrow_mut() = Some(up);
    Ok(())
}

/// Serves h2c clients on `listen`, one HTTP/2 connection at a time to each of `backends`.
pub async fn serve(listen: SocketAddr, backends: &[SocketAddr]) {
    let mut all = Vec::new();
    for &addr in backends {
        let backend = Rc::new(Backend { addr, up: RefCell::new(None) });
        open(backend.clone()).await.expect("connect to a --backend");
        all.push(backend);
    }
    let backends: Rc<[Rc<Backend>]> = all.into();
    let next = Rc::new(Cell::new(0usize));
    let listener = TcpListener::bind(listen).expect("bind --listen");
    loop {
        let Ok((stream, _)) = listener.accept().await else { continue };
        let _ = stream.set_nodelay(true);
        let (backends, next) = (backends.clone(), next.clone());
        monoio::spawn(async move {
            let client = Side::new(Role::Server);
            let (r, w) = stream.into_split();
            monoio::spawn(write(client.clone(), w));
            let _ = read(&client, r, |event| forward(&client, &backends, &next, event)).await;
            client.closed.set(true);
            client.wake();
        });
    }
}

/// What a reader does to its own connection once an event is handled (the engine is borrowed
/// while the event lives).
enum After {
    /// Refuse the client's stream (REFUSED_STREAM).
    Refuse(StreamId),
    /// Give back the receive credit of DATA passed on.
    Release(StreamId, usize),
}

/// What a reader does with one event of its connection.
type Handler<'h> = dyn FnMut(Event<'_>) -> Option<After> + 'h;

/// Reads `side`'s connection until it ends, handing each event to `on_event`.
async fn read(
    side: &Side,
    mut r: OwnedReadHalf<TcpStream>,
    mut on_event: impl FnMut(Event<'_>) -> Option<After>,
) -> io::Result<()> {
    let on_event: &mut Handler<'_> = &mut on_event;
    let mut buf = Vec::with_capacity(BUF);
    loop {
        let len = buf.len();
        if len == buf.capacity() {
            return Err(io::ErrorKind::InvalidData.into());
        }
        let (res, slice) = r.read(buf.slice_mut(len..)).await;
        buf = slice.into_inner();
        if res? == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        let used = handle(side, &buf, on_event)?;
        buf.drain(..used);
        if side.conn.borrow().out_len() > 0 {
            side.wake();
        }
    }
}

/// Feeds `input` to the engine until it needs more; returns the bytes it consumed.
fn handle(side: &Side, input: &[u8], on_event: &mut Handler<'_>) -> io::Result<usize> {
    let mut conn = side.conn.borrow_mut();
    conn.set_now(fulcrum_util::now_ms());
    let mut pos = 0;
    loop {
        let received = conn.recv(&input[pos..]).map_err(io::Error::other)?;
        if received.is_idle() {
            if !conn.wants_read() {
                return Err(io::ErrorKind::WouldBlock.into());
            }
            return Ok(pos);
        }
        pos += received.used;
        match received.event.and_then(&mut *on_event) {
            Some(After::Refuse(stream)) => conn.reset(stream, ErrorCode::REFUSED_STREAM),
            Some(After::Release(stream, n)) => conn.release(stream, n),
            None => {}
        }
    }
}

/// Client side: a request goes onto the next backend connection that takes a stream.
fn forward(
    client: &Rc<Side>,
    backends: &[Rc<Backend>],
    next: &Cell<usize>,
    event: Event<'_>,
) -> Option<After> {
    let Event::Request { stream, fields, end_stream, .. } = event else { return None };
    if !end_stream {
        return Some(After::Refuse(stream));
    }
    for _ in 0..backends.len() {
        let backend = &backends[next.get() % backends.len()];
        next.set(next.get().wrapping_add(1));
        let Some(up) = backend.up.borrow().clone() else { continue };
        let opened = up.side.conn.borrow_mut().send_request(fields.iter(), true);
        if let Ok(id) = opened {
            up.routes.borrow_mut().insert(id.get(), (client.clone(), stream));
            up.side.wake();
            return None;
        }
    }
    Some(After::Refuse(stream))
}

/// Backend side: an answer's head, DATA, trailers or reset goes to the client's stream.
fn answer(up: &Upstream, event: Event<'_>) -> Option<After> {
    let (id, end) = match event {
        Event::Response { stream, end_stream, .. } | Event::Data { stream, end_stream, .. } => {
            (stream, end_stream)
        }
        Event::Trailers { stream, .. } | Event::Reset { stream, .. } => (stream, true),
        _ => return None,
    };
    let release = match event {
        Event::Data { data, .. } if !data.is_empty() => Some(After::Release(id, data.len())),
        _ => None,
    };
    let mut routes = up.routes.borrow_mut();
    let route = if end { routes.remove(&id.get()) } else { routes.get(&id.get()).cloned() };
    drop(routes);
    let Some((client, to)) = route else { return release };
    let mut conn = client.conn.borrow_mut();
    // A client stream that went away takes the rest with it: the engine refuses to send on it.
    let _ = match event {
        Event::Response { status, fields, end_stream, .. } => {
            let regular = fields.iter().filter(|f| f.pseudo.is_none());
            conn.send_response(to, status, regular, end_stream).map(drop)
        }
        Event::Data { data, end_stream, .. } => conn.send_data(to, data, end_stream).map(drop),
        Event::Trailers { fields, .. } => conn.send_trailers(to, fields.iter()),
        _ => {
            conn.reset(to, ErrorCode::CANCEL);
            Ok(())
        }
    };
    drop(conn);
    client.wake();
    release
}

/// Writes what `side`'s engine queues, once per turn of the worker's loop, until the
/// connection is closed.
async fn write(side: Rc<Side>, mut w: OwnedWriteHalf<TcpStream>) {
    let mut spare = Vec::with_capacity(BUF);
    loop {
        poll_fn(|cx| {
            if side.closed.get() || side.conn.borrow().out_len() > 0 {
                return Poll::Ready(());
            }
            side.writer.set(Some(cx.waker().clone()));
            Poll::Pending
        })
        .await;
        // As Fulcrum's writer does: the tasks already queued behind this one may add output
        // too, so one write carries what the whole turn produced for this connection.
        fulcrum_util::yield_now().await;
        if side.closed.get() {
            return;
        }
        let out = side.conn.borrow_mut().take_out(spare);
        let (res, out) = w.write_all(out).await;
        if res.is_err() {
            return;
        }
        spare = out;
    }
}
