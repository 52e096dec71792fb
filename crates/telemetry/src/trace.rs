//! Request tracing with fastrace: a root span per sampled request and one child span per phase.
//!
//! Spans are cheap handles on the worker; fastrace's collector thread gathers finished spans and
//! hands them to [`EventReporter`] (off the data path), which writes each as an operational
//! event. Sampling: `telemetry.trace_sample_rate` (0 = off: no span, no header is touched). While
//! tracing is on, a request carrying a W3C `traceparent` follows its sampled flag and joins its
//! trace; a sampled request is forwarded with a `traceparent` naming Fulcrum's span as parent.

use fastrace::Span;
use fastrace::collector::{Config, Reporter, SpanContext, SpanRecord};

use crate::info;

/// Starts fastrace's collector when tracing is on. Returns whether it is.
pub fn init(sample_rate: f64) -> bool {
    if sample_rate <= 0.0 {
        return false;
    }
    fastrace::set_reporter(
        EventReporter,
        Config::default().report_interval(std::time::Duration::from_millis(500)),
    );
    true
}

/// Reports the spans still buffered (at shutdown).
pub fn flush(enabled: bool) {
    if enabled {
        fastrace::flush();
    }
}

/// Writes each finished span as an operational event (`msg=span`).
#[derive(Debug)]
pub struct EventReporter;

impl Reporter for EventReporter {
    fn report(&mut self, spans: Vec<SpanRecord>) {
        for s in spans {
            info!(
                "span",
                name = s.name,
                trace_id = format!("{:032x}", s.trace_id.0),
                span_id = format!("{:016x}", s.span_id.0),
                parent_id = format!("{:016x}", s.parent_id.0),
                start_unix_us = s.begin_time_unix_ns / 1000,
                duration_us = s.duration_ns / 1000,
            );
        }
    }
}

/// The spans of one request (all no-ops when it is not sampled). Boxed, and absent when the
/// request is not sampled: a `fastrace` span is almost 200 bytes, and this lives in every
/// request's task.
pub struct RequestTrace {
    root: Option<Box<Span>>,
}

impl std::fmt::Debug for RequestTrace {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RequestTrace")
            .field("sampled", &self.root.as_deref().and_then(SpanContext::from_span).is_some())
            .finish()
    }
}

impl Default for RequestTrace {
    fn default() -> Self {
        Self::off()
    }
}

impl RequestTrace {
    /// Not traced.
    pub fn off() -> Self {
        Self { root: None }
    }

    /// Decides whether this request is traced. `head` is the request head being forwarded
    /// (without its final empty line): its `traceparent` is honoured and, when the request is
    /// traced, rewritten (or added) to name Fulcrum's span as the parent.
    pub fn begin(sample_rate: f64, head: &mut Vec<u8>) -> Self {
        let found = find_header(head, b"traceparent");
        let incoming = found
            .clone()
            .and_then(|r| std::str::from_utf8(&head[r]).ok())
            .and_then(|v| SpanContext::decode_w3c_traceparent(v.trim()));
        let parent = match incoming {
            Some(ctx) if ctx.sampled => ctx,
            Some(_) => return Self::off(),
            None if fastrand::f64() < sample_rate => SpanContext::random(),
            None => return Self::off(),
        };
        let root = Span::root("request", parent);
        if let Some(ctx) = SpanContext::from_span(&root) {
            let value = ctx.sampled(true).encode_w3c_traceparent();
            match found {
                Some(range) => {
                    head.splice(range, value.bytes());
                }
                None => {
                    head.extend_from_slice(b"traceparent: ");
                    head.extend_from_slice(value.as_bytes());
                    head.extend_from_slice(b"\r\n");
                }
            }
        }
        Self { root: Some(Box::new(root)) }
    }

    /// Like [`begin`](Self::begin), for a request that has no HTTP/1.1 head (HTTP/2):
    /// `incoming` is its `traceparent` value, if any. Returns the trace and, when the request
    /// is traced, the `traceparent` value to forward (naming Fulcrum's span as the parent).
    pub fn begin_value(sample_rate: f64, incoming: Option<&[u8]>) -> (Self, Option<String>) {
        let incoming = incoming
            .and_then(|v| std::str::from_utf8(v).ok())
            .and_then(|v| SpanContext::decode_w3c_traceparent(v.trim()));
        let parent = match incoming {
            Some(ctx) if ctx.sampled => ctx,
            Some(_) => return (Self::off(), None),
            None if fastrand::f64() < sample_rate => SpanContext::random(),
            None => return (Self::off(), None),
        };
        let root = Span::root("request", parent);
        let value = SpanContext::from_span(&root).map(|c| c.sampled(true).encode_w3c_traceparent());
        (Self { root: Some(Box::new(root)) }, value)
    }

    /// A span for one phase of the request, or `None` (nothing allocated) when the request is
    /// not traced; it ends when dropped.
    #[inline]
    pub fn phase(&self, name: &'static str) -> Option<Box<Span>> {
        self.root.as_deref().map(|root| Box::new(Span::enter_with_parent(name, root)))
    }

    /// Attaches a property to the request's root span.
    pub fn note(&self, key: &'static str, value: impl FnOnce() -> String) {
        if let Some(root) = &self.root {
            root.add_property(|| (key, value()));
        }
    }
}

/// The value range of the first header named `name` (case-insensitive) in a head.
fn find_header(head: &[u8], name: &[u8]) -> Option<std::ops::Range<usize>> {
    let mut pos = head.windows(2).position(|w| w == b"\r\n")? + 2;
    while pos < head.len() {
        let end = head[pos..].windows(2).position(|w| w == b"\r\n").map_or(head.len(), |e| pos + e);
        let line = &head[pos..end];
        if line.len() > name.len()
            && line[name.len()] == b':'
            && line[..name.len()].eq_ignore_ascii_case(name)
        {
            let mut start = pos + name.len() + 1;
            while start < end && head[start] == b' ' {
                start += 1;
            }
            return Some(start..end);
        }
        pos = end + 2;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_and_rewrites_traceparent() {
        let tp = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
        let mut head =
            format!("GET / HTTP/1.1\r\nhost: a\r\nTraceParent: {tp}\r\nx: y\r\n").into_bytes();
        let r = find_header(&head, b"traceparent").unwrap();
        assert_eq!(&head[r], tp.as_bytes());
        let _trace = RequestTrace::begin(0.0, &mut head);
        let text = String::from_utf8(head).unwrap();
        assert!(text.contains("TraceParent: 00-0af7651916cd43dd8448eb211c80319c-"), "{text}");
        assert!(!text.contains("b7ad6b7169203331"), "parent replaced: {text}");
        assert!(text.ends_with("x: y\r\n"));
    }

    #[test]
    fn unsampled_and_absent() {
        let mut head = b"GET / HTTP/1.1\r\nhost: a\r\n".to_vec();
        let before = head.clone();
        let _t = RequestTrace::begin(0.0, &mut head);
        assert_eq!(head, before, "rate 0 and no traceparent: untouched");
        let mut head = b"GET / HTTP/1.1\r\nhost: a\r\n".to_vec();
        let _t = RequestTrace::begin(1.0, &mut head);
        assert!(String::from_utf8(head).unwrap().contains("traceparent: 00-"));
    }
}
