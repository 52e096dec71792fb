//! Telemetry behind Fulcrum's own small interfaces: operational events ([`EventSink`]), access
//! records ([`access::AccessSink`], written by the `lb-log` thread), Prometheus metrics
//! ([`metrics`]) and request spans ([`trace`]).
//!
//! The rest of the code emits events through [`event!`](crate::event) and its level shortcuts,
//! and fills an [`exchange::ExchangeLog`] per request; only this module and `main.rs` know which
//! library or writer is behind them. The default event sink writes one logfmt line per event to
//! stderr: `ts=… level=info msg="…" key=value …`.

mod access;
mod json;
mod metrics;
mod trace;
mod tracing_sink;

pub use self::access::{
    AccessLog, AccessRecord, AccessSink, BodyEncoding, CacheStatus, DroppedRecords, Producer,
    unix_micros_now,
};
pub use self::json::JsonLinesSink;
pub use self::metrics::{Collect, Counter, Encoder, Gauge, Histogram, Kind, PerWorker, Registry};
pub use self::trace::RequestTrace;
pub use self::tracing_sink::TracingSink;

use std::fmt::{self, Display, Write as _};
use std::io::Write as _;
use std::sync::OnceLock;
use std::time::{SystemTime, UNIX_EPOCH};

/// Severity of an operational event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    /// Detail for debugging.
    Debug,
    /// Normal operation.
    Info,
    /// Something an operator should look at.
    Warn,
    /// A failure.
    Error,
}

impl Display for Level {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Level::Debug => "debug",
            Level::Info => "info",
            Level::Warn => "warn",
            Level::Error => "error",
        })
    }
}

/// Where operational events go. Implementations must be cheap and never block for long.
pub trait EventSink: Send + Sync + 'static {
    /// Records one event with its structured fields.
    fn event(&self, level: Level, message: &str, fields: &[(&str, &dyn Display)]);
}

/// Writes logfmt lines to stderr, one `write` per event so lines from threads never interleave.
#[derive(Debug, Default)]
pub struct StderrSink {
    min_level: Option<Level>,
}

impl StderrSink {
    /// A sink that drops events below `min_level`.
    pub fn new(min_level: Level) -> Self {
        Self { min_level: Some(min_level) }
    }
}

impl EventSink for StderrSink {
    fn event(&self, level: Level, message: &str, fields: &[(&str, &dyn Display)]) {
        if level < self.min_level.unwrap_or(Level::Info) {
            return;
        }
        let mut line = String::with_capacity(128);
        let _ = write!(line, "ts={} level={level} msg=", Rfc3339Now);
        push_value(&mut line, message);
        for (key, value) in fields {
            let _ = write!(line, " {key}=");
            push_value(&mut line, &value.to_string());
        }
        line.push('\n');
        let _ = std::io::stderr().lock().write_all(line.as_bytes());
    }
}

/// Quotes a logfmt value when it contains spaces, quotes or `=`.
fn push_value(line: &mut String, value: &str) {
    if !value.is_empty() && !value.contains([' ', '"', '=', '\n', '\\']) {
        line.push_str(value);
        return;
    }
    line.push('"');
    for c in value.chars() {
        match c {
            '"' => line.push_str("\\\""),
            '\\' => line.push_str("\\\\"),
            '\n' => line.push_str("\\n"),
            c => line.push(c),
        }
    }
    line.push('"');
}

/// The current UTC time as RFC 3339 with microseconds.
pub struct Rfc3339Now;

impl Display for Rfc3339Now {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
        Rfc3339Micros(now.as_micros() as u64).fmt(f)
    }
}

/// A time given in microseconds since the Unix epoch, as RFC 3339 UTC with microseconds.
pub struct Rfc3339Micros(pub u64);

impl Display for Rfc3339Micros {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let secs = self.0 / 1_000_000;
        let (days, rem) = (secs / 86_400, secs % 86_400);
        let (y, m, d) = civil_from_days(days as i64);
        write!(
            f,
            "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:06}Z",
            rem / 3600,
            rem / 60 % 60,
            rem % 60,
            self.0 % 1_000_000
        )
    }
}

/// Days since 1970-01-01 to a proleptic Gregorian date (Howard Hinnant's algorithm).
pub(crate) fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

/// Which access-log implementation formats and writes the records (on `lb-log`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AccessLogFormat {
    /// Fulcrum's own JSON-lines writer (the faster one; see `benches/access_log.rs`).
    #[default]
    JsonLines,
    /// The same records emitted as `tracing` events to a JSON-writing subscriber.
    Tracing,
}

/// Where access records go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AccessLogTarget {
    /// Standard output.
    Stdout,
    /// A file, opened for appending (created if missing).
    File(std::path::PathBuf),
}

/// Opens the access-log implementation `format` on `target`. The one place that chooses.
pub fn open_sink(
    target: &AccessLogTarget,
    format: AccessLogFormat,
) -> std::io::Result<Box<dyn AccessSink>> {
    let out: Box<dyn std::io::Write + Send> = match target {
        AccessLogTarget::Stdout => Box::new(std::io::stdout()),
        AccessLogTarget::File(path) => {
            Box::new(std::fs::OpenOptions::new().create(true).append(true).open(path)?)
        }
    };
    Ok(match format {
        AccessLogFormat::JsonLines => Box::new(json::JsonLinesSink::new(out)),
        AccessLogFormat::Tracing => Box::new(tracing_sink::TracingSink::new(out)),
    })
}

/// Where the access log goes and how, as the composition root decided from the configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessLogSettings {
    /// The destination.
    pub target: AccessLogTarget,
    /// The implementation.
    pub format: AccessLogFormat,
}

/// The process's telemetry: the metrics registry, the access-log writer and the tracer.
#[derive(Debug)]
pub struct Telemetry {
    /// The metrics registry (rendered by `GET /metrics`); features register their collectors.
    pub registry: std::sync::Arc<Registry>,
    access_log: Option<access::AccessLog>,
    tracing: bool,
}

/// Why telemetry could not start.
#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    /// The access log file could not be opened.
    #[error("access log {path}: {source}")]
    Open {
        /// The configured destination.
        path: String,
        /// Why it failed.
        source: std::io::Error,
    },
    /// The writer thread could not be spawned.
    #[error("starting lb-log: {0}")]
    Spawn(std::io::Error),
}

impl Telemetry {
    /// Starts telemetry for `workers` workers: the access log (to `sink` when given, else to
    /// `access_log`, else off; each worker's queue holds `queue_capacity` records) and tracing
    /// at `trace_rate`. Returns each worker's access-log producer, by index (`None`: log off).
    pub fn start(
        access_log: Option<&AccessLogSettings>,
        queue_capacity: usize,
        trace_rate: f64,
        workers: usize,
        sink: Option<Box<dyn AccessSink>>,
    ) -> Result<(Self, Vec<Option<Producer>>), TelemetryError> {
        let registry = std::sync::Arc::new(Registry::default());
        let sink = match (sink, access_log) {
            (Some(sink), _) => Some(sink),
            (None, Some(settings)) => {
                Some(open_sink(&settings.target, settings.format).map_err(|source| {
                    let path = match &settings.target {
                        AccessLogTarget::Stdout => "-".to_owned(),
                        AccessLogTarget::File(p) => p.display().to_string(),
                    };
                    TelemetryError::Open { path, source }
                })?)
            }
            (None, None) => None,
        };
        let (access_log, producers) = match sink {
            Some(sink) => {
                let (log, producers) = access::AccessLog::start(sink, workers, queue_capacity)
                    .map_err(TelemetryError::Spawn)?;
                registry.register(log.dropped());
                (Some(log), producers.into_iter().map(Some).collect())
            }
            None => (None, (0..workers).map(|_| None).collect::<Vec<_>>()),
        };
        let tracing = trace::init(trace_rate);
        Ok((Self { registry, access_log, tracing }, producers))
    }

    /// Flushes what is queued (call after the workers exited): every record accepted into a
    /// queue is written unless the sink stays stuck for longer than `deadline`.
    pub fn shutdown(&mut self, deadline: std::time::Duration) {
        if let Some(log) = self.access_log.take() {
            log.shutdown(deadline);
        }
        trace::flush(std::mem::take(&mut self.tracing));
    }
}

static SINK: OnceLock<Box<dyn EventSink>> = OnceLock::new();

/// Installs the process-wide event sink. Only the first call wins; later calls return `false`.
pub fn install(sink: Box<dyn EventSink>) -> bool {
    SINK.set(sink).is_ok()
}

/// Sends one event to the installed sink (stderr at info level when none was installed).
pub fn emit(level: Level, message: &str, fields: &[(&str, &dyn Display)]) {
    SINK.get_or_init(|| Box::new(StderrSink::default())).event(level, message, fields);
}

/// Emits an operational event: `event!(Level::Info, "message", key = value, ...)`.
#[macro_export]
macro_rules! event {
    ($level:expr, $msg:expr $(, $key:ident = $value:expr)* $(,)?) => {
        $crate::emit(
            $level,
            $msg,
            &[$((stringify!($key), &$value as &dyn ::std::fmt::Display)),*],
        )
    };
}

/// `event!` at info level.
#[macro_export]
macro_rules! info {
    ($($t:tt)*) => { $crate::event!($crate::Level::Info, $($t)*) };
}

/// `event!` at warn level.
#[macro_export]
macro_rules! warn {
    ($($t:tt)*) => { $crate::event!($crate::Level::Warn, $($t)*) };
}

/// `event!` at error level.
#[macro_export]
macro_rules! error {
    ($($t:tt)*) => { $crate::event!($crate::Level::Error, $($t)*) };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(20_454), (2026, 1, 1));
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
    }

    #[test]
    fn logfmt_quoting() {
        let mut s = String::new();
        push_value(&mut s, "plain");
        push_value(&mut s, " a \"b\"");
        assert_eq!(s, "plain\" a \\\"b\\\"\"");
    }
}
