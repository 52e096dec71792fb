//! The least an HTTP/1.1 proxy on Fulcrum's runtime can do per request: a yardstick for
//! `bench.sh http`, run as its baseline build
//! (`FULCRUM_BASELINE_BIN=target/release/examples/l7_floor ./bench.sh http`, targets
//! `base-io_uring` and `base-epoll`; docs/performance.md says what it showed).
//!
//! One monoio runtime built by Fulcrum's own `build_runtime` (same ring flags, timer driver
//! on), one thread. Each client connection gets one backend connection, round robin over the
//! `--backend`s, as the L4 relay (HAProxy `mode tcp`) keeps them. Per request it parses the
//! request head and the response head with httparse, frames both bodies by `Content-Length`
//! and forwards every byte as it came: no pool, no timeouts, no header rewriting, no routing,
//! no telemetry. Anything else (chunked bodies, pipelined requests, heads over 16 KiB) closes
//! the connection. Not a proxy to run: it only shows what parsing on this runtime costs.
//!
//! With `L7_FLOOR_CODEC=fulcrum` in its environment it forwards each head the way Fulcrum
//! does instead, through Fulcrum's own HTTP/1.1 codec (`fulcrum_http::h1`): hop-by-hop fields
//! dropped, `X-Forwarded-For`, `X-Forwarded-Proto` and `Via` added, framing re-emitted, the
//! rewritten head and the body bytes read with it sent in one write (the body bytes copied
//! behind the head: fine for small bodies, dear for large ones). So the two modes, run side by
//! side, price the codec's work per request apart from the rest of the proxy.
//!
//! With `h2c://` backends it is the HTTP/2 floor instead ([`h2`]): h2c clients, one HTTP/2
//! connection to each backend, Fulcrum's own HTTP/2 engine on both sides and nothing around it.
//!
//! Takes the flags bench.sh gives Fulcrum: `--listen ADDR --backend http://ADDR...` (or
//! `h2c://ADDR...`) `--io-driver io_uring|epoll`; `--config`, `--workers`, `--access-log`,
//! `--admin-listen` (which `benches/kernel_split.sh` gives) and `--http2-engine` are ignored
//! with their value.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout, clippy::print_stderr)]

use std::cell::Cell;
use std::io::{self, ErrorKind};
use std::net::SocketAddr;
use std::rc::Rc;

use fulcrum_http::h1::{
    ClientSide, Forwarded, Framing, MAX_HEADERS, ResponseStart, finish_request_head,
    header_storage, parse_backend_response, parse_request,
};
use fulcrum_util::{IoDriverChoice, build_runtime};
use monoio::buf::IoBufMut;
use monoio::io::{AsyncReadRent, AsyncWriteRentExt};
use monoio::net::{TcpListener, TcpStream};

/// The largest head read (request or response), and the size of each read.
const BUF: usize = 16 * 1024;
/// Room for the fields of one head in the plain mode (httparse's storage, on the stack).
const HEADERS: usize = 64;

mod h2;

fn main() {
    let mut args = std::env::args().skip(1);
    let (mut listen, mut backends, mut driver) = (None, Vec::new(), IoDriverChoice::IoUring);
    let mut h2c = false;
    while let Some(arg) = args.next() {
        let mut value = || args.next().unwrap_or_else(|| panic!("{arg} needs a value"));
        match arg.as_str() {
            "--listen" => listen = Some(value().parse::<SocketAddr>().expect("--listen ADDR")),
            "--backend" => {
                let url = value();
                let is_h2c = url.starts_with("h2c://");
                assert!(
                    backends.is_empty() || is_h2c == h2c,
                    "--backend: all http:// or all h2c://"
                );
                h2c = is_h2c;
                let addr = url.trim_start_matches("http://").trim_start_matches("h2c://");
                let addr = addr.parse::<SocketAddr>().expect("--backend http://ADDR or h2c://ADDR");
                backends.push(addr);
            }
            "--io-driver" if value() == "epoll" => driver = IoDriverChoice::Epoll,
            "--io-driver" => driver = IoDriverChoice::IoUring,
            "--config" | "--workers" | "--access-log" | "--admin-listen" | "--http2-engine" => {
                drop(value())
            }
            _ => {
                println!(
                    "usage: l7_floor --listen ADDR --backend http://ADDR...|h2c://ADDR... [--io-driver io_uring|epoll] [--config F] [--workers N] [--access-log X] [--admin-listen ADDR] [--http2-engine X]"
                );
                return;
            }
        }
    }
    let listen = listen.expect("--listen ADDR");
    assert!(!backends.is_empty(), "at least one --backend http://ADDR");
    let codec = std::env::var("L7_FLOOR_CODEC").is_ok_and(|c| c == "fulcrum");
    let mut built = build_runtime(driver).expect("runtime");
    if h2c {
        eprintln!("driver={} http2", built.driver);
        built.runtime.block_on(h2::serve(listen, &backends));
        return;
    }
    eprintln!("driver={} codec={}", built.driver, if codec { "fulcrum" } else { "verbatim" });
    built.runtime.block_on(serve(listen, backends.into(), codec));
}

async fn serve(listen: SocketAddr, backends: Rc<[SocketAddr]>, codec: bool) {
    let listener = TcpListener::bind(listen).expect("bind --listen");
    let next = Cell::new(0usize);
    loop {
        let Ok((client, _)) = listener.accept().await else { continue };
        let backend = backends[next.get() % backends.len()];
        next.set(next.get().wrapping_add(1));
        monoio::spawn(async move {
            let Ok(upstream) = TcpStream::connect(backend).await else { return };
            let _ = client.set_nodelay(true).and(upstream.set_nodelay(true));
            let _ = if codec {
                relay_rewritten(client, upstream).await
            } else {
                relay(client, upstream).await
            };
        });
    }
}

/// Request, response, request...: each head read and parsed, each message forwarded.
async fn relay(mut client: TcpStream, mut upstream: TcpStream) -> io::Result<()> {
    let (mut up, mut down) = (Vec::with_capacity(BUF), Vec::with_capacity(BUF));
    loop {
        let (buf, framed) = read_head(&mut client, up, request_framing).await?;
        up = forward(&mut client, &mut upstream, buf, framed).await?;
        let (buf, framed) = read_head(&mut upstream, down, response_framing).await?;
        down = forward(&mut upstream, &mut client, buf, framed).await?;
    }
}

/// [`relay`] with each head rewritten by Fulcrum's codec: the rewritten head goes out with the
/// body bytes that came with the original (the rest of the body is read into the same buffer),
/// the received one is emptied for the next head.
async fn relay_rewritten(mut client: TcpStream, mut upstream: TcpStream) -> io::Result<()> {
    let (mut up, mut down) = (Vec::with_capacity(BUF), Vec::with_capacity(BUF));
    let (mut head, mut is_head) = (Vec::with_capacity(BUF), false);
    let forwarded = Forwarded { ip: "127.0.0.1", proto: "http" };
    loop {
        let (buf, total) = read_head(&mut client, up, |input| {
            let info = match parse_request(input, MAX_HEADERS, &forwarded, &[], &mut head) {
                Ok(Some(info)) => info,
                Ok(None) => return None,
                Err(_) => return Some(Err(ErrorKind::InvalidData.into())),
            };
            finish_request_head(&mut head, &info, "backend");
            is_head = info.is_head;
            Some(rewritten(&mut head, input, info.head_len, info.framing))
        })
        .await?;
        head = forward(&mut client, &mut upstream, std::mem::take(&mut head), total).await?;
        up = buf;
        up.clear();

        let (buf, total) = read_head(&mut upstream, down, |input| {
            let mut storage = header_storage();
            let response = match parse_backend_response(input, &mut storage, MAX_HEADERS, is_head) {
                Ok(Some(ResponseStart::Final(response))) => response,
                Ok(None) => return None,
                Ok(Some(_)) | Err(_) => return Some(Err(ErrorKind::InvalidData.into())),
            };
            let client = ClientSide {
                is_head,
                http10: false,
                keep_alive: true,
                upgrade: Default::default(),
            };
            response.write_h1(client, &mut head);
            Some(rewritten(&mut head, input, response.head_len, response.framing))
        })
        .await?;
        head = forward(&mut upstream, &mut client, std::mem::take(&mut head), total).await?;
        down = buf;
        down.clear();
    }
}

/// Puts the body bytes that followed the original head (in `input`) behind the rewritten
/// `head`; the whole message's length as sent.
fn rewritten(
    head: &mut Vec<u8>,
    input: &[u8],
    head_len: usize,
    framing: Framing,
) -> io::Result<usize> {
    let body = match framing {
        Framing::None => 0,
        Framing::Length(n) => usize::try_from(n).map_err(|_| ErrorKind::InvalidData)?,
        Framing::Chunked | Framing::UntilClose => return Err(ErrorKind::Unsupported.into()),
    };
    let sent_head = head.len();
    head.extend_from_slice(input.get(head_len..).unwrap_or_default());
    Ok(sent_head + body)
}

/// Reads into `buf` (empty) until `framing` finds a whole head; returns the buffer and the
/// whole message's length (head and body).
async fn read_head(
    from: &mut TcpStream,
    mut buf: Vec<u8>,
    mut framing: impl FnMut(&[u8]) -> Option<io::Result<usize>>,
) -> io::Result<(Vec<u8>, usize)> {
    loop {
        if buf.len() == buf.capacity() {
            return Err(ErrorKind::InvalidData.into());
        }
        let len = buf.len();
        let (read, slice) = from.read(buf.slice_mut(len..)).await;
        buf = slice.into_inner();
        if read? == 0 {
            return Err(ErrorKind::UnexpectedEof.into());
        }
        if let Some(total) = framing(&buf) {
            return Ok((buf, total?));
        }
    }
}

/// Writes `buf` (a head and the first body bytes) to `to`, then relays the rest of the
/// message's `total` bytes from `from`; gives `buf` back empty.
async fn forward(
    from: &mut TcpStream,
    to: &mut TcpStream,
    buf: Vec<u8>,
    total: usize,
) -> io::Result<Vec<u8>> {
    let mut left = total.checked_sub(buf.len()).ok_or(ErrorKind::InvalidData)?;
    let (written, mut buf) = to.write_all(buf).await;
    written?;
    while left > 0 {
        buf.clear();
        let (read, back) = from.read(buf).await;
        let n = read?;
        if n == 0 || n > left {
            return Err(ErrorKind::InvalidData.into());
        }
        left -= n;
        let (written, back) = to.write_all(back).await;
        written?;
        buf = back;
    }
    buf.clear();
    Ok(buf)
}

fn request_framing(buf: &[u8]) -> Option<io::Result<usize>> {
    let mut headers = [httparse::EMPTY_HEADER; HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    framing(req.parse(buf), req.headers)
}

fn response_framing(buf: &[u8]) -> Option<io::Result<usize>> {
    let mut headers = [httparse::EMPTY_HEADER; HEADERS];
    let mut resp = httparse::Response::new(&mut headers);
    framing(resp.parse(buf), resp.headers)
}

/// The message's whole length once the head is complete; an error for what this does not
/// relay (a bad head, chunked bodies).
fn framing(
    parsed: httparse::Result<usize>,
    headers: &[httparse::Header],
) -> Option<io::Result<usize>> {
    let head = match parsed {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return None,
        Err(_) => return Some(Err(ErrorKind::InvalidData.into())),
    };
    let mut body = 0;
    for h in headers {
        if h.name.eq_ignore_ascii_case("transfer-encoding") {
            return Some(Err(ErrorKind::Unsupported.into()));
        }
        if h.name.eq_ignore_ascii_case("content-length") {
            match std::str::from_utf8(h.value).ok().and_then(|v| v.trim().parse::<usize>().ok()) {
                Some(n) => body = n,
                None => return Some(Err(ErrorKind::InvalidData.into())),
            }
        }
    }
    Some(Ok(head + body))
}
