//! The WebSocket load generator of `bench.sh ws`: `N` tunnels to one URL, each sending a small
//! text message and waiting for its echo, over and over, for a while:
//! `cargo run --release --example ws_load -- ws://127.0.0.1:39110/ 50 5 32`
//! (URL, tunnels, seconds, message bytes). One blocking thread per tunnel. Prints one line in
//! the form bench.sh reads from wrk:
//! `BENCH requests=… duration_us=… p50_us=… p99_us=… connect=… read=… write=… status=0 timeout=0`
//! (`requests` counts echoed messages). `ws_load --check URL` makes one tunnel and one echo and
//! exits 0 when it worked (bench.sh's readiness check).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout, clippy::print_stderr)]

use std::net::TcpStream;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use tungstenite::{Message, WebSocket};

fn connect(url: &str) -> Result<WebSocket<TcpStream>, String> {
    let authority = url
        .strip_prefix("ws://")
        .and_then(|rest| rest.split('/').next())
        .ok_or_else(|| format!("not a ws:// URL: {url}"))?;
    let stream = TcpStream::connect(authority).map_err(|e| e.to_string())?;
    stream.set_nodelay(true).map_err(|e| e.to_string())?;
    stream.set_read_timeout(Some(Duration::from_secs(10))).map_err(|e| e.to_string())?;
    tungstenite::client(url, stream).map(|(ws, _)| ws).map_err(|e| e.to_string())
}

/// One tunnel's results.
#[derive(Default)]
struct Tally {
    latencies_us: Vec<u32>,
    connect_errors: u64,
    read_errors: u64,
    write_errors: u64,
}

fn run_tunnel(url: &str, payload: &str, stop: &AtomicBool) -> Tally {
    let mut tally = Tally::default();
    let mut ws = match connect(url) {
        Ok(ws) => ws,
        Err(_) => {
            tally.connect_errors += 1;
            return tally;
        }
    };
    while !stop.load(Ordering::Relaxed) {
        let sent = Instant::now();
        if ws.send(Message::text(payload)).is_err() {
            tally.write_errors += 1;
            return tally;
        }
        match ws.read() {
            Ok(Message::Text(_)) => {
                tally.latencies_us.push(sent.elapsed().as_micros().min(u32::MAX as u128) as u32);
            }
            Ok(_) => {}
            Err(_) => {
                tally.read_errors += 1;
                return tally;
            }
        }
    }
    let _ = ws.close(None);
    let _ = ws.flush();
    tally
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("--check") {
        let url = args.get(1).expect("usage: ws_load --check URL");
        let ok = connect(url).and_then(|mut ws| {
            ws.send(Message::text("ready")).map_err(|e| e.to_string())?;
            match ws.read().map_err(|e| e.to_string())? {
                Message::Text(t) if t.as_str() == "ready" => Ok(()),
                other => Err(format!("unexpected {other:?}")),
            }
        });
        if let Err(e) = ok {
            eprintln!("ws_load --check {url}: {e}");
            std::process::exit(1);
        }
        return;
    }
    let [url, tunnels, secs, size] = args.as_slice() else {
        eprintln!("usage: ws_load URL TUNNELS SECONDS MESSAGE_BYTES | ws_load --check URL");
        std::process::exit(2);
    };
    let tunnels: usize = tunnels.parse().expect("TUNNELS");
    let secs: u64 = secs.parse().expect("SECONDS");
    let payload = Arc::new("x".repeat(size.parse().expect("MESSAGE_BYTES")));
    let stop = Arc::new(AtomicBool::new(false));
    let url = Arc::new(url.clone());
    let started = Instant::now();
    let threads: Vec<_> = (0..tunnels)
        .map(|_| {
            let (url, payload, stop) = (url.clone(), payload.clone(), stop.clone());
            std::thread::Builder::new()
                .stack_size(256 * 1024)
                .spawn(move || run_tunnel(&url, &payload, &stop))
                .expect("spawn")
        })
        .collect();
    #[allow(clippy::disallowed_methods)] // the run's length, on the load generator's own thread
    std::thread::sleep(Duration::from_secs(secs));
    stop.store(true, Ordering::Relaxed);
    let elapsed = started.elapsed();
    let mut all = Tally::default();
    for t in threads {
        let t = t.join().expect("tunnel thread");
        all.latencies_us.extend(t.latencies_us);
        all.connect_errors += t.connect_errors;
        all.read_errors += t.read_errors;
        all.write_errors += t.write_errors;
    }
    all.latencies_us.sort_unstable();
    let pct = |p: f64| -> f64 {
        let n = all.latencies_us.len();
        if n == 0 { 0.0 } else { f64::from(all.latencies_us[((n as f64 * p) as usize).min(n - 1)]) }
    };
    println!(
        "BENCH requests={} duration_us={} p50_us={:.1} p99_us={:.1} connect={} read={} write={} \
         status=0 timeout=0",
        all.latencies_us.len(),
        elapsed.as_micros(),
        pct(0.50),
        pct(0.99),
        all.connect_errors,
        all.read_errors,
        all.write_errors
    );
}
