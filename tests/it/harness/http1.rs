//! HTTP/1.1 on the wire, for both sides of the tests: heads, chunked and sized bodies, a
//! deterministic pattern for large bodies, and the one HTTP/1.1 client ([`Client`]) over
//! `std::net::TcpStream`. The client surfaces what it receives as it is: interim `1xx` heads are
//! kept in [`Response::interim`], and chunked bodies also as their raw bytes.

use std::collections::HashMap;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

// ---------------------------------------------------------------------------------------------
// Deterministic large bodies: 64 KiB blocks, each stamped with its index, so a body of any size
// is generated and verified from one small buffer.
// ---------------------------------------------------------------------------------------------

/// The pattern block, and the unit of large reads and writes.
pub const BLOCK: usize = 64 * 1024;

fn base_block() -> Vec<u8> {
    (0..BLOCK).map(|i| (i * 7 + i / 251) as u8).collect()
}

/// Writes `len` pattern bytes to `w`, optionally as chunks of `BLOCK` bytes.
pub fn write_pattern(w: &mut impl Write, len: u64, chunked: bool) -> io::Result<()> {
    let mut block = base_block();
    let mut off = 0u64;
    let mut k = 0u64;
    while off < len {
        block[..8].copy_from_slice(&k.to_le_bytes());
        let n = (len - off).min(BLOCK as u64) as usize;
        if chunked {
            write!(w, "{n:x}\r\n")?;
            w.write_all(&block[..n])?;
            w.write_all(b"\r\n")?;
        } else {
            w.write_all(&block[..n])?;
        }
        off += n as u64;
        k += 1;
    }
    Ok(())
}

/// Checks a stream of bytes against the pattern as it arrives.
pub struct PatternCheck {
    block: Vec<u8>,
    k: u64,
    pub offset: u64,
    pub mismatch_at: Option<u64>,
}

impl Default for PatternCheck {
    fn default() -> Self {
        let mut block = base_block();
        block[..8].copy_from_slice(&0u64.to_le_bytes());
        Self { block, k: 0, offset: 0, mismatch_at: None }
    }
}

impl PatternCheck {
    /// Checks the next bytes of the stream.
    pub fn feed(&mut self, mut data: &[u8]) {
        while !data.is_empty() {
            let k = self.offset / BLOCK as u64;
            if k != self.k {
                self.k = k;
                self.block[..8].copy_from_slice(&k.to_le_bytes());
            }
            let p = (self.offset % BLOCK as u64) as usize;
            let take = data.len().min(BLOCK - p);
            if self.mismatch_at.is_none() && data[..take] != self.block[p..p + take] {
                self.mismatch_at = Some(self.offset);
            }
            self.offset += take as u64;
            data = &data[take..];
        }
    }
    /// Whether exactly `len` bytes came, all matching.
    pub fn ok(&self, len: u64) -> bool {
        self.mismatch_at.is_none() && self.offset == len
    }
}

// ---------------------------------------------------------------------------------------------
// Message reading, shared by the backends and the client
// ---------------------------------------------------------------------------------------------

/// A parsed message head (request or response).
#[derive(Debug, Clone, Default)]
pub struct Head {
    /// Request: method, target, version. Response: version, status, reason.
    pub start: [String; 3],
    pub headers: Vec<(String, String)>,
}

impl Head {
    /// A field's value (the first, case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
    /// Every value of a field.
    pub fn all(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .collect()
    }
    /// Whether a comma-separated field carries `token`.
    pub fn has_token(&self, name: &str, token: &str) -> bool {
        self.all(name)
            .iter()
            .flat_map(|v| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case(token))
    }
    /// `Content-Length`, if any (panics if it is not a number).
    pub fn content_length(&self) -> Option<u64> {
        self.header("content-length").map(|v| v.trim().parse().expect("numeric content-length"))
    }
    /// Whether the body is chunked.
    pub fn is_chunked(&self) -> bool {
        self.has_token("transfer-encoding", "chunked")
    }
    /// A response's status code (0 when the start line has none).
    pub fn status(&self) -> u16 {
        self.start[1].parse().unwrap_or(0)
    }
    /// An interim response (`1xx` but `101`, which is final).
    pub fn is_interim(&self) -> bool {
        (100..200).contains(&self.status()) && self.status() != 101
    }
}

/// Reads one head; `Ok(None)` on a clean EOF before any byte.
pub fn read_head(r: &mut impl BufRead) -> io::Result<Option<Head>> {
    let mut line = String::new();
    if r.read_line(&mut line)? == 0 {
        return Ok(None);
    }
    let start_line = line.trim_end_matches(['\r', '\n']).to_owned();
    let mut parts = start_line.splitn(3, ' ');
    let start = [
        parts.next().unwrap_or("").to_owned(),
        parts.next().unwrap_or("").to_owned(),
        parts.next().unwrap_or("").to_owned(),
    ];
    let mut headers = Vec::new();
    loop {
        line.clear();
        if r.read_line(&mut line)? == 0 {
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "EOF inside a head"));
        }
        let l = line.trim_end_matches(['\r', '\n']);
        if l.is_empty() {
            break;
        }
        let (name, value) = l
            .split_once(':')
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, format!("bad line {l:?}")))?;
        headers.push((name.trim().to_owned(), value.trim().to_owned()));
    }
    Ok(Some(Head { start, headers }))
}

/// Reads a chunked body, handing each payload piece to `sink`; returns the trailers.
pub fn read_chunked(
    r: &mut impl BufRead,
    mut sink: impl FnMut(&[u8]) -> io::Result<()>,
) -> io::Result<Vec<(String, String)>> {
    let bad = |m: &str| io::Error::new(io::ErrorKind::InvalidData, m.to_owned());
    let mut line = String::new();
    let mut buf = vec![0u8; BLOCK];
    loop {
        line.clear();
        if r.read_line(&mut line)? == 0 {
            return Err(bad("EOF in chunk size"));
        }
        let size_str = line.trim_end().split(';').next().unwrap_or("");
        let mut size = u64::from_str_radix(size_str.trim(), 16).map_err(|_| bad("chunk size"))?;
        if size == 0 {
            break;
        }
        while size > 0 {
            let n = size.min(buf.len() as u64) as usize;
            r.read_exact(&mut buf[..n])?;
            sink(&buf[..n])?;
            size -= n as u64;
        }
        let mut crlf = [0u8; 2];
        r.read_exact(&mut crlf)?;
        if &crlf != b"\r\n" {
            return Err(bad("chunk not followed by CRLF"));
        }
    }
    let mut trailers = Vec::new();
    loop {
        line.clear();
        if r.read_line(&mut line)? == 0 {
            return Err(bad("EOF in trailers"));
        }
        let l = line.trim_end_matches(['\r', '\n']);
        if l.is_empty() {
            return Ok(trailers);
        }
        let (n, v) = l.split_once(':').ok_or_else(|| bad("trailer line"))?;
        trailers.push((n.trim().to_owned(), v.trim().to_owned()));
    }
}

/// Reads exactly `len` bytes, handing them to `sink` in pieces.
pub fn read_sized(
    r: &mut impl Read,
    mut len: u64,
    mut sink: impl FnMut(&[u8]) -> io::Result<()>,
) -> io::Result<()> {
    let mut buf = vec![0u8; BLOCK];
    while len > 0 {
        let want = len.min(buf.len() as u64) as usize;
        let n = r.read(&mut buf[..want])?;
        if n == 0 {
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "body truncated"));
        }
        sink(&buf[..n])?;
        len -= n as u64;
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// The client
// ---------------------------------------------------------------------------------------------

/// A complete response, as the client received it.
#[derive(Debug, Clone)]
pub struct Response {
    /// Interim (`1xx`) heads that came before the final one, in order (`101` is final).
    pub interim: Vec<Head>,
    pub head: Head,
    /// The body (de-chunked).
    pub body: Vec<u8>,
    /// The body bytes as they crossed the wire (chunk framing included).
    pub raw_body: Vec<u8>,
    pub trailers: Vec<(String, String)>,
}

impl Response {
    /// The final status.
    pub fn status(&self) -> u16 {
        self.head.status()
    }
    /// A field of the final head.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.head.header(name)
    }
    /// The `x-backend` header the test backends add.
    pub fn backend(&self) -> &str {
        self.header("x-backend").unwrap_or("")
    }
    /// The body as text (lossy).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
    /// The body as JSON (panics, showing the body, if it is not).
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text()))
    }
    /// Asserts the status and, for an admin API error, the JSON envelope's code.
    pub fn expect(&self, status: u16, code: Option<&str>) -> &Self {
        assert_eq!(self.status(), status, "body: {}", self.text());
        if let Some(code) = code {
            let v = self.json();
            assert_eq!(v["error"]["code"], code, "body: {v}");
            assert!(v["error"]["message"].as_str().is_some_and(|m| !m.is_empty()), "{v}");
        }
        self
    }
}

/// One client connection; keep-alive by default.
pub struct Client {
    pub reader: BufReader<TcpStream>,
    pub writer: TcpStream,
}

impl Client {
    /// Connects (reads time out after 20 s).
    pub fn connect(addr: SocketAddr) -> Self {
        let stream = TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect {addr}: {e}"));
        stream.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        let _ = stream.set_nodelay(true);
        Self {
            reader: BufReader::with_capacity(BLOCK, stream.try_clone().unwrap()),
            writer: stream,
        }
    }

    /// How long a read may wait from now on.
    pub fn set_read_timeout(&self, t: Duration) {
        self.writer.set_read_timeout(Some(t)).unwrap();
    }

    /// Writes raw bytes.
    pub fn send_raw(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.writer.write_all(bytes)
    }

    /// Writes a request head (adding `Host: test` unless given) and a sized body.
    pub fn send(
        &mut self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> io::Result<()> {
        let sized = !body.is_empty() || method == "POST" || method == "PUT";
        let mut bytes = request_head(method, path, headers, sized.then_some(body.len()));
        bytes.extend_from_slice(body);
        self.writer.write_all(&bytes)
    }

    /// Writes a request head only (adding `Host: test` unless given), with `Content-Length`
    /// when `content_length` is set; the body, if any, follows with [`Client::send_raw`].
    pub fn send_head(
        &mut self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        content_length: Option<usize>,
    ) -> io::Result<()> {
        self.writer.write_all(&request_head(method, path, headers, content_length))
    }

    /// Sends a request and reads its response (a `HEAD` response without a body).
    pub fn request(
        &mut self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> io::Result<Response> {
        self.send(method, path, headers, body)?;
        self.read_response_to(method == "HEAD")
    }

    /// `GET path` on this connection.
    pub fn get(&mut self, path: &str) -> io::Result<Response> {
        self.request("GET", path, &[], b"")
    }

    /// Reads the next head (interim or final).
    pub fn read_head(&mut self) -> io::Result<Head> {
        read_head(&mut self.reader)?.ok_or_else(|| {
            io::Error::new(io::ErrorKind::UnexpectedEof, "connection closed before a response")
        })
    }

    /// Reads the next final response, body and trailers included; interim `1xx` heads before
    /// it are kept in [`Response::interim`].
    pub fn read_response(&mut self) -> io::Result<Response> {
        self.read_response_to(false)
    }

    /// [`Client::read_response`] for a `HEAD` request when `head_request` (no body follows).
    pub fn read_response_to(&mut self, head_request: bool) -> io::Result<Response> {
        read_response(&mut self.reader, head_request)
    }

    /// Reads the body of a response whose head was read, streaming it into `sink`.
    pub fn read_body(
        &mut self,
        head: &Head,
        sink: impl FnMut(&[u8]) -> io::Result<()>,
    ) -> io::Result<Vec<(String, String)>> {
        read_body(&mut self.reader, head, sink)
    }

    /// Reads the body of a response whose head was read, checking it against the pattern
    /// [`write_pattern`] writes.
    pub fn read_pattern_body(&mut self, head: &Head) -> io::Result<PatternCheck> {
        let mut check = PatternCheck::default();
        self.read_body(head, |b| {
            check.feed(b);
            Ok(())
        })?;
        Ok(check)
    }

    /// Whether the server closed the connection: a read returns EOF (or a reset) within `t`.
    pub fn is_closed_by_peer(&mut self, t: Duration) -> bool {
        self.set_read_timeout(t);
        let mut b = [0u8; 1];
        match self.reader.read(&mut b) {
            Ok(0) => true,
            Ok(_) => false,
            Err(e) => matches!(
                e.kind(),
                io::ErrorKind::ConnectionReset | io::ErrorKind::ConnectionAborted
            ),
        }
    }

    /// Starts a thread that writes a `len`-byte pattern body (sized or chunked, with optional
    /// trailers) on a clone of the socket; the caller reads the response concurrently.
    pub fn stream_body_in_thread(
        &self,
        len: u64,
        chunked: bool,
        trailers: &'static str,
    ) -> std::thread::JoinHandle<io::Result<()>> {
        let stream = self.writer.try_clone().unwrap();
        std::thread::spawn(move || {
            let mut w = io::BufWriter::with_capacity(BLOCK, stream);
            write_pattern(&mut w, len, chunked)?;
            if chunked {
                write!(w, "0\r\n{trailers}\r\n")?;
            }
            w.flush()
        })
    }
}

/// Reads the next final response from `r` (any byte stream: a TCP connection, a TLS one),
/// body and trailers included (no body after a `HEAD` request, `head_request`); interim `1xx`
/// heads before it are kept in [`Response::interim`].
pub fn read_response(r: &mut impl BufRead, head_request: bool) -> io::Result<Response> {
    let mut interim = Vec::new();
    let head = loop {
        let head = read_head(r)?.ok_or_else(|| {
            io::Error::new(io::ErrorKind::UnexpectedEof, "connection closed before a response")
        })?;
        if !head.is_interim() {
            break head;
        }
        interim.push(head);
    };
    let mut body = Vec::new();
    let mut raw_body = Vec::new();
    let trailers = if head_request {
        Vec::new()
    } else {
        let mut tee = Tee { inner: r, copy: &mut raw_body };
        read_body(&mut tee, &head, |b| {
            body.extend_from_slice(b);
            Ok(())
        })?
    };
    Ok(Response { interim, head, body, raw_body, trailers })
}

/// Reads a response body framed as `head` says (204 and 304 have none; without framing it
/// runs to the close).
fn read_body(
    r: &mut impl BufRead,
    head: &Head,
    mut sink: impl FnMut(&[u8]) -> io::Result<()>,
) -> io::Result<Vec<(String, String)>> {
    let status = head.status();
    if status == 204 || status == 304 || status == 101 {
        return Ok(Vec::new());
    }
    if head.is_chunked() {
        read_chunked(r, sink)
    } else if let Some(n) = head.content_length() {
        read_sized(r, n, sink).map(|()| Vec::new())
    } else {
        let mut buf = vec![0u8; BLOCK];
        loop {
            let n = r.read(&mut buf)?;
            if n == 0 {
                return Ok(Vec::new());
            }
            sink(&buf[..n])?;
        }
    }
}

/// A reader that copies every byte consumed through it.
struct Tee<'a, R> {
    inner: &'a mut R,
    copy: &'a mut Vec<u8>,
}

impl<R: BufRead> Read for Tee<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.copy.extend_from_slice(&buf[..n]);
        Ok(n)
    }
}

impl<R: BufRead> BufRead for Tee<'_, R> {
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        self.inner.fill_buf()
    }
    fn consume(&mut self, amt: usize) {
        // The buffer is filled (the caller just looked at it): this returns it without I/O.
        if let Ok(buf) = self.inner.fill_buf() {
            self.copy.extend_from_slice(&buf[..amt.min(buf.len())]);
        }
        self.inner.consume(amt);
    }
}

/// A request head: `Host: test` unless `headers` name one, then `headers`, then
/// `Content-Length` when given.
pub fn request_head(
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    content_length: Option<usize>,
) -> Vec<u8> {
    let mut req = format!("{method} {path} HTTP/1.1\r\n");
    if !headers.iter().any(|(n, _)| n.eq_ignore_ascii_case("host")) {
        req.push_str("Host: test\r\n");
    }
    for (n, v) in headers {
        req.push_str(&format!("{n}: {v}\r\n"));
    }
    if let Some(len) = content_length {
        req.push_str(&format!("Content-Length: {len}\r\n"));
    }
    req.push_str("\r\n");
    req.into_bytes()
}

/// Sends `GET path` on a fresh connection with `Connection: close`.
pub fn get_once(addr: SocketAddr, path: &str) -> io::Result<Response> {
    Client::connect(addr).request("GET", path, &[("Connection", "close")], b"")
}

/// One request on a fresh connection with `Connection: close` (and `headers`, then a sized
/// body when given); panics when no complete response comes back.
pub fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&[u8]>,
) -> Response {
    let mut all = vec![("Connection", "close")];
    all.extend_from_slice(headers);
    let mut c = Client::connect(addr);
    c.send_head(method, path, &all, body.map(<[u8]>::len)).unwrap();
    if let Some(body) = body {
        // The server may answer (413) and close before reading everything.
        let _ = c.send_raw(body);
    }
    c.read_response_to(method == "HEAD")
        .unwrap_or_else(|e| panic!("no response to {method} {path}: {e}"))
}

/// [`request`] with a chunked body (no declared length): `body` goes out in chunks of at most
/// `chunk` bytes, then the last chunk; panics when no complete response comes back.
pub fn request_chunked(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
    chunk: usize,
) -> Response {
    let mut all = vec![("Connection", "close"), ("Transfer-Encoding", "chunked")];
    all.extend_from_slice(headers);
    let mut c = Client::connect(addr);
    c.send_head(method, path, &all, None).unwrap();
    for piece in body.chunks(chunk) {
        // The server may answer (413) and close before reading everything.
        if c.send_raw(format!("{:x}\r\n", piece.len()).as_bytes()).is_err()
            || c.send_raw(piece).is_err()
            || c.send_raw(b"\r\n").is_err()
        {
            break;
        }
    }
    let _ = c.send_raw(b"0\r\n\r\n");
    c.read_response_to(method == "HEAD")
        .unwrap_or_else(|e| panic!("no response to {method} {path} (chunked): {e}"))
}

/// Counts the responses per backend name.
pub fn tally(responses: &[Response]) -> HashMap<String, usize> {
    let mut m = HashMap::new();
    for r in responses {
        *m.entry(r.backend().to_owned()).or_insert(0) += 1;
    }
    m
}

/// What came back on a raw connection: every byte read, and whether the peer closed it.
pub struct Exchange {
    pub bytes: Vec<u8>,
    pub closed: bool,
}

impl Exchange {
    /// The status of the first response, if the bytes start with an HTTP/1.x status line.
    pub fn status(&self) -> Option<u16> {
        let text = String::from_utf8_lossy(&self.bytes);
        let line = text.lines().next()?;
        let mut parts = line.split(' ');
        parts.next().filter(|v| v.starts_with("HTTP/1."))?;
        parts.next()?.parse().ok()
    }

    /// The first 300 characters, for messages.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.bytes).chars().take(300).collect()
    }
}

/// Sends `raw` on a fresh connection, then reads until the peer closes (or 5 s pass).
pub fn exchange(addr: SocketAddr, raw: &[u8]) -> Exchange {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    // The server may answer and close before it has read everything: a failed write is fine.
    let _ = s.write_all(raw);
    let mut bytes = Vec::new();
    let mut buf = [0u8; 4096];
    let closed = loop {
        match s.read(&mut buf) {
            Ok(0) => break true,
            Ok(n) => bytes.extend_from_slice(&buf[..n]),
            Err(e) => {
                break matches!(
                    e.kind(),
                    io::ErrorKind::ConnectionReset | io::ErrorKind::ConnectionAborted
                );
            }
        }
    };
    Exchange { bytes, closed }
}
