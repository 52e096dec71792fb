//! Fulcrum's own access-log implementation: JSON lines formatted by hand into one reusable
//! buffer and written in batches (the default; see `benches/access_log.rs`).

use std::io::{self, Write};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use fulcrum_util::push_decimal;

use super::access::{AccessRecord, AccessSink};

/// Writes each record as one JSON object per line to `W`, buffering until [`flush`].
///
/// [`flush`]: AccessSink::flush
#[derive(Debug)]
pub struct JsonLinesSink<W: Write> {
    out: W,
    buf: Vec<u8>,
    /// Cached `YYYY-MM-DDTHH:MM:SS` for the second `cached_sec`.
    cached_sec: u64,
    cached_prefix: [u8; 19],
}

/// Buffered bytes beyond which a batch is written out early.
const WRITE_AT: usize = 256 * 1024;

impl<W: Write> JsonLinesSink<W> {
    /// A sink writing to `out`.
    pub fn new(out: W) -> Self {
        Self {
            out,
            buf: Vec::with_capacity(64 * 1024),
            cached_sec: u64::MAX,
            cached_prefix: [0; 19],
        }
    }

    /// The underlying writer.
    pub fn get_ref(&self) -> &W {
        &self.out
    }

    /// Appends `record` as one line to `line` (no I/O).
    pub fn format(&mut self, record: &AccessRecord, line: &mut Vec<u8>) {
        line.extend_from_slice(b"{\"ts\":\"");
        self.push_ts(line, record.ts_unix_us);
        line.extend_from_slice(b"\",\"worker\":");
        push_decimal(line, u64::from(record.worker));
        line.extend_from_slice(b",\"epoch\":");
        push_decimal(line, record.epoch);
        line.extend_from_slice(b",\"method\":");
        push_str(line, record.method.as_bytes());
        line.extend_from_slice(b",\"path\":");
        push_str(line, record.path.as_bytes());
        line.extend_from_slice(b",\"pool\":");
        push_str(line, record.pool.as_bytes());
        line.extend_from_slice(b",\"route\":");
        match record.route {
            Some(index) => push_decimal(line, u64::from(index)),
            None => line.extend_from_slice(b"null"),
        }
        line.extend_from_slice(b",\"backend\":");
        match record.backend() {
            Some(url) => push_str(line, url.as_bytes()),
            None => line.extend_from_slice(b"null"),
        }
        line.extend_from_slice(b",\"status\":");
        push_decimal(line, u64::from(record.status));
        if let Some(grpc) = record.grpc_status {
            line.extend_from_slice(b",\"grpc_status\":");
            push_decimal(line, u64::from(grpc));
        }
        if let Some(version) = record.tls_version {
            line.extend_from_slice(b",\"tls_version\":");
            push_str(line, version.as_bytes());
            line.extend_from_slice(b",\"sni\":");
            match record.sni.as_str() {
                "" => line.extend_from_slice(b"null"),
                sni => push_str(line, sni.as_bytes()),
            }
        }
        if !record.upgrade.is_empty() {
            line.extend_from_slice(b",\"upgrade\":");
            push_str(line, record.upgrade.as_bytes());
            line.extend_from_slice(b",\"tunnel_bytes_client_to_backend\":");
            push_decimal(line, record.tunnel_bytes_client_to_backend);
            line.extend_from_slice(b",\"tunnel_bytes_backend_to_client\":");
            push_decimal(line, record.tunnel_bytes_backend_to_client);
            line.extend_from_slice(b",\"tunnel_duration_us\":");
            push_decimal(line, record.tunnel_duration_us);
            line.extend_from_slice(b",\"tunnel_close\":");
            push_str(line, record.tunnel_close.as_bytes());
        }
        line.extend_from_slice(b",\"duration_us\":");
        push_decimal(line, record.duration_us);
        line.extend_from_slice(b",\"upstream_us\":");
        push_decimal(line, record.upstream_us);
        line.extend_from_slice(b",\"bytes_in\":");
        push_decimal(line, record.bytes_in);
        line.extend_from_slice(b",\"bytes_out\":");
        push_decimal(line, record.bytes_out);
        line.extend_from_slice(b",\"cache\":\"");
        line.extend_from_slice(record.cache.as_str().as_bytes());
        line.extend_from_slice(b"\",\"body\":");
        let (encoding, body) = record.body_text();
        match encoding {
            super::access::BodyEncoding::Utf8 => push_str(line, body),
            super::access::BodyEncoding::Base64 => {
                line.push(b'"');
                let start = line.len();
                line.resize(start + body.len().div_ceil(3) * 4, 0);
                let n = STANDARD.encode_slice(body, &mut line[start..]).unwrap_or(0);
                line.truncate(start + n);
                line.push(b'"');
            }
        }
        line.extend_from_slice(b",\"body_bytes\":");
        push_decimal(line, record.body_bytes);
        line.extend_from_slice(if record.body_truncated() {
            b",\"body_truncated\":true,\"body_encoding\":\""
        } else {
            b",\"body_truncated\":false,\"body_encoding\":\""
        });
        line.extend_from_slice(encoding.as_str().as_bytes());
        line.extend_from_slice(b"\"}\n");
    }

    fn push_ts(&mut self, line: &mut Vec<u8>, unix_us: u64) {
        let secs = unix_us / 1_000_000;
        if secs != self.cached_sec {
            let (days, rem) = (secs / 86_400, secs % 86_400);
            let (y, m, d) = super::civil_from_days(days as i64);
            let mut prefix = Vec::with_capacity(19);
            let _ = write!(
                prefix,
                "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}",
                rem / 3600,
                rem / 60 % 60,
                rem % 60
            );
            if prefix.len() == 19 {
                self.cached_prefix.copy_from_slice(&prefix);
                self.cached_sec = secs;
            }
        }
        line.extend_from_slice(&self.cached_prefix);
        let micros = (unix_us % 1_000_000) as u32;
        let mut frac = *b".000000Z";
        let mut v = micros;
        for i in (1..7).rev() {
            frac[i] = b'0' + (v % 10) as u8;
            v /= 10;
        }
        line.extend_from_slice(&frac);
    }
}

impl<W: Write + Send + 'static> AccessSink for JsonLinesSink<W> {
    fn write(&mut self, record: &AccessRecord) -> io::Result<()> {
        let mut buf = std::mem::take(&mut self.buf);
        self.format(record, &mut buf);
        self.buf = buf;
        if self.buf.len() >= WRITE_AT { self.flush() } else { Ok(()) }
    }

    fn flush(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let result = self.out.write_all(&self.buf).and_then(|()| self.out.flush());
        self.buf.clear();
        result
    }
}

/// For each byte: 0 = copied as is, otherwise the letter after the backslash (`u` = `\u00XX`).
static ESCAPE: [u8; 256] = {
    let mut t = [0u8; 256];
    let mut i = 0;
    while i < 0x20 {
        t[i] = b'u';
        i += 1;
    }
    t[0x7f] = b'u';
    t[b'\n' as usize] = b'n';
    t[b'\r' as usize] = b'r';
    t[b'\t' as usize] = b't';
    t[b'"' as usize] = b'"';
    t[b'\\' as usize] = b'\\';
    t
};

/// Writes `s` (valid UTF-8) as a JSON string.
fn push_str(out: &mut Vec<u8>, s: &[u8]) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.reserve(s.len() + 2);
    out.push(b'"');
    let mut start = 0;
    for (i, &b) in s.iter().enumerate() {
        let e = ESCAPE[b as usize];
        if e == 0 {
            continue;
        }
        out.extend_from_slice(&s[start..i]);
        if e == b'u' {
            out.extend_from_slice(&[
                b'\\',
                b'u',
                b'0',
                b'0',
                HEX[(b >> 4) as usize],
                HEX[(b & 15) as usize],
            ]);
        } else {
            out.extend_from_slice(&[b'\\', e]);
        }
        start = i + 1;
    }
    out.extend_from_slice(&s[start..]);
    out.push(b'"');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_a_record_as_valid_json() {
        let mut sink = JsonLinesSink::new(Vec::new());
        let record = AccessRecord {
            ts_unix_us: 1_767_225_600_000_042, // 2026-01-01T00:00:00.000042Z
            worker: 1,
            epoch: 7,
            method: "POST".into(),
            path: "/a?q=\"x\"".into(),
            pool: "api".into(),
            route: Some(3),
            status: 200,
            body: vec![0, 1, 2, 255],
            body_bytes: 10,
            ..Default::default()
        };
        let mut line = Vec::new();
        sink.format(&record, &mut line);
        let v: serde_json::Value = serde_json::from_slice(&line).unwrap();
        assert_eq!(v["ts"], "2026-01-01T00:00:00.000042Z");
        assert_eq!(v["path"], "/a?q=\"x\"");
        assert_eq!(v["backend"], serde_json::Value::Null);
        assert_eq!((&v["pool"], &v["route"]), (&"api".into(), &3.into()));
        assert_eq!(v["body"], "AAEC/w==");
        assert_eq!(v["body_encoding"], "base64");
        assert_eq!(v["body_truncated"], true);
        assert_eq!(v["cache"], "off");
        assert!(v.get("grpc_status").is_none());
        assert_eq!(v.as_object().unwrap().len(), 18);
        let mut line = Vec::new();
        sink.format(&AccessRecord { route: None, ..record }, &mut line);
        let v: serde_json::Value = serde_json::from_slice(&line).unwrap();
        assert_eq!(v["route"], serde_json::Value::Null);
    }

    #[test]
    fn escapes_control_characters() {
        let mut out = Vec::new();
        push_str(&mut out, b"a\x01\n\"b");
        assert_eq!(out, b"\"a\\u0001\\n\\\"b\"");
    }
}
