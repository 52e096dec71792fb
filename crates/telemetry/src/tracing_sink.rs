//! The second access-log implementation, on the `tracing` library: each record is emitted as a
//! `tracing` event (target `fulcrum::access`) to a subscriber that writes every event as one
//! JSON line (values serialised with `serde_json`). Selected with
//! `telemetry.access_log_format = "tracing"`.

use std::fmt;
use std::io::{self, Write};
use std::sync::Mutex;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Dispatch, Event, Metadata, Subscriber};

use super::Rfc3339Micros;
use super::access::{AccessRecord, AccessSink, BodyEncoding};

/// Emits records through `tracing` to a JSON-lines subscriber writing to `W`.
pub struct TracingSink {
    dispatch: Dispatch,
}

impl fmt::Debug for TracingSink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TracingSink").finish_non_exhaustive()
    }
}

impl TracingSink {
    /// A sink whose subscriber writes to `out`.
    pub fn new(out: impl Write + Send + 'static) -> Self {
        let subscriber = JsonSubscriber {
            out: Mutex::new(Box::new(io::BufWriter::with_capacity(64 * 1024, out))),
            line: Mutex::new(Vec::with_capacity(1024)),
        };
        Self { dispatch: Dispatch::new(subscriber) }
    }
}

impl AccessSink for TracingSink {
    fn write(&mut self, r: &AccessRecord) -> io::Result<()> {
        let tunnel = !r.upgrade.is_empty();
        let (encoding, body) = r.body_text();
        let body_b64;
        let body_str = match encoding {
            BodyEncoding::Utf8 => std::str::from_utf8(body).unwrap_or_default(),
            BodyEncoding::Base64 => {
                body_b64 = STANDARD.encode(body);
                body_b64.as_str()
            }
        };
        tracing::dispatcher::with_default(&self.dispatch, || {
            tracing::info!(
                target: "fulcrum::access",
                ts = %Rfc3339Micros(r.ts_unix_us),
                worker = r.worker,
                epoch = r.epoch,
                method = r.method.as_str(),
                path = r.path.as_str(),
                pool = r.pool.as_str(),
                route = r.route,
                backend = r.backend(),
                status = r.status,
                grpc_status = r.grpc_status,
                tls_version = r.tls_version,
                sni = (!r.sni.is_empty()).then_some(r.sni.as_str()),
                upgrade = tunnel.then_some(r.upgrade.as_str()),
                tunnel_bytes_client_to_backend = tunnel.then_some(r.tunnel_bytes_client_to_backend),
                tunnel_bytes_backend_to_client = tunnel.then_some(r.tunnel_bytes_backend_to_client),
                tunnel_duration_us = tunnel.then_some(r.tunnel_duration_us),
                tunnel_close = tunnel.then_some(r.tunnel_close),
                duration_us = r.duration_us,
                upstream_us = r.upstream_us,
                bytes_in = r.bytes_in,
                bytes_out = r.bytes_out,
                cache = r.cache.as_str(),
                body = body_str,
                body_bytes = r.body_bytes,
                body_truncated = r.body_truncated(),
                body_encoding = encoding.as_str(),
            );
        });
        Ok(())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.dispatch
            .downcast_ref::<JsonSubscriber>()
            .map_or(Ok(()), |s| s.out.lock().map_or(Ok(()), |mut out| out.flush()))
    }
}

/// A minimal `tracing` subscriber: events only, each written as a flat JSON object.
struct JsonSubscriber {
    out: Mutex<Box<dyn Write + Send>>,
    line: Mutex<Vec<u8>>,
}

/// Collects an event's fields as `"name":value` pairs.
struct JsonVisitor<'a> {
    line: &'a mut Vec<u8>,
    saw_backend: bool,
    saw_route: bool,
}

impl JsonVisitor<'_> {
    fn key(&mut self, field: &Field) {
        if self.line.len() > 1 {
            self.line.push(b',');
        }
        let _ = serde_json::to_writer(&mut *self.line, field.name());
        self.line.push(b':');
        match field.name() {
            "backend" => self.saw_backend = true,
            "route" => self.saw_route = true,
            _ => {}
        }
    }
}

impl Visit for JsonVisitor<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.key(field);
        let _ = serde_json::to_writer(&mut *self.line, value);
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.key(field);
        let _ = serde_json::to_writer(&mut *self.line, &value);
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.key(field);
        let _ = serde_json::to_writer(&mut *self.line, &value);
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.key(field);
        let _ = serde_json::to_writer(&mut *self.line, &value);
    }
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.key(field);
        let _ = serde_json::to_writer(&mut *self.line, &format!("{value:?}"));
    }
}

impl Subscriber for JsonSubscriber {
    fn enabled(&self, _: &Metadata<'_>) -> bool {
        true
    }
    fn new_span(&self, _: &Attributes<'_>) -> Id {
        Id::from_u64(1)
    }
    fn record(&self, _: &Id, _: &Record<'_>) {}
    fn record_follows_from(&self, _: &Id, _: &Id) {}
    fn enter(&self, _: &Id) {}
    fn exit(&self, _: &Id) {}

    fn event(&self, event: &Event<'_>) {
        let Ok(mut line) = self.line.lock() else { return };
        line.clear();
        line.push(b'{');
        let mut visitor = JsonVisitor { line: &mut line, saw_backend: false, saw_route: false };
        event.record(&mut visitor);
        // `tracing` skips `None` fields; the record schema has `"backend": null` (and
        // `"route": null`) instead.
        let (saw_backend, saw_route) = (visitor.saw_backend, visitor.saw_route);
        if !saw_backend {
            line.extend_from_slice(b",\"backend\":null");
        }
        if !saw_route {
            line.extend_from_slice(b",\"route\":null");
        }
        line.extend_from_slice(b"}\n");
        if let Ok(mut out) = self.out.lock() {
            let _ = out.write_all(&line);
        }
    }
}
