//! The crypto provider comparison and the stream's throughput (a bench binary, not a timed
//! test). Run on a quiet machine:
//!
//! ```text
//! cargo bench --bench provider --features ring
//! ```
//!
//! For each provider compiled in (aws-lc-rs, ring with `--features ring`), with an ECDSA P-256
//! certificate and rustls connections in memory (no sockets): full and resumed handshakes per
//! second counting only the server side's CPU time, on this one thread (one core); then
//! encryption and decryption throughput of TLS 1.3 AES-128-GCM and ChaCha20-Poly1305 with
//! 16 KiB records. Last, bytes per second through [`fulcrum_tls::TlsStream`] over loopback TCP
//! on one monoio runtime (client and server on the same core), against plain TCP. Times are
//! the thread's CPU time (the machine is shared), plus wall time for the loopback runs.
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

use std::io::{Read, Write};
use std::sync::Arc;
use std::time::Duration;

use cpu_time::ThreadTime;

use fulcrum_tls::rustls::client::Resumption;
use fulcrum_tls::rustls::crypto::{CryptoProvider, SupportedKxGroup};
use fulcrum_tls::rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use fulcrum_tls::rustls::{
    self, CipherSuite, ClientConfig, ClientConnection, Connection, NamedGroup, RootCertStore,
    ServerConfig, ServerConnection, SupportedProtocolVersion,
};
use fulcrum_tls::{CertPaths, ServerOptions, TlsAcceptor, TlsConnector};
use monoio::io::{AsyncReadRent, AsyncWriteRent, AsyncWriteRentExt};
use monoio::net::{TcpListener, TcpStream};

/// Best of this many runs of each measurement (the machine is shared and noisy).
const RUNS: usize = 3;
const HANDSHAKES: usize = 1500;
const BULK_BYTES: usize = 256 << 20;
const STREAM_BYTES: usize = 512 << 20;

fn main() {
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let chain = vec![cert.cert.der().clone()];
    let key = PrivateKeyDer::Pkcs8(cert.signing_key.serialize_der().into());

    println!("fulcrum-tls provider bench (best of {RUNS}); ECDSA P-256 certificate");
    for (name, provider, ticketer) in providers() {
        println!("\n== {name}");
        let setups: &[(&str, &SupportedProtocolVersion, NamedGroup)] = &[
            ("TLS 1.3 X25519", &rustls::version::TLS13, NamedGroup::X25519),
            ("TLS 1.3 X25519MLKEM768", &rustls::version::TLS13, NamedGroup::X25519MLKEM768),
            ("TLS 1.2 ECDHE X25519", &rustls::version::TLS12, NamedGroup::X25519),
        ];
        for (label, version, group) in setups {
            let Some(kx) = provider.kx_groups.iter().find(|g| g.name() == *group) else {
                println!("{label:28} (group not offered by {name})");
                continue;
            };
            let pair = Pair::new(&provider, ticketer, &chain, &key, version, *kx, None);
            let full = best(|| pair.handshakes(HANDSHAKES, false));
            let resumed = best(|| pair.handshakes(HANDSHAKES, true));
            println!(
                "{label:28} full {:>7.0} handshakes/s   resumed {:>7.0} handshakes/s   (server CPU)",
                HANDSHAKES as f64 / full.as_secs_f64(),
                HANDSHAKES as f64 / resumed.as_secs_f64(),
            );
        }
        let x25519 = provider.kx_groups.iter().find(|g| g.name() == NamedGroup::X25519).unwrap();
        for suite in
            [CipherSuite::TLS13_AES_128_GCM_SHA256, CipherSuite::TLS13_CHACHA20_POLY1305_SHA256]
        {
            let version = &rustls::version::TLS13;
            let pair = Pair::new(&provider, ticketer, &chain, &key, version, *x25519, Some(suite));
            let (encrypt, decrypt) = pair.bulk(BULK_BYTES);
            println!(
                "{:28} encrypt {:>6.0} MiB/s   decrypt {:>6.0} MiB/s   (16 KiB records)",
                format!("{suite:?}"),
                mib_per_s(BULK_BYTES, encrypt),
                mib_per_s(BULK_BYTES, decrypt),
            );
        }
    }

    println!(
        "\n== TlsStream over loopback, {} provider, client and server on one core",
        fulcrum_tls::PROVIDER
    );
    let dir = std::env::temp_dir().join(format!("fulcrum-tls-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let paths = CertPaths { cert: dir.join("cert.pem"), key: dir.join("key.pem") };
    std::fs::write(&paths.cert, cert.cert.pem()).unwrap();
    std::fs::write(&paths.key, cert.signing_key.serialize_pem()).unwrap();
    let best_of = |runs: &[(Duration, Duration)], cpu: bool| {
        runs.iter().map(|(wall, thread)| if cpu { *thread } else { *wall }).min().unwrap()
    };
    for uring in [true, false] {
        let driver = if uring { "io_uring" } else { "epoll" };
        let tcp: Vec<_> = (0..RUNS).map(|_| stream_run(uring, None)).collect();
        println!(
            "{driver:8} plain TCP          {:>6.0} MiB/s wall, {:>6.0} MiB per CPU-second",
            mib_per_s(STREAM_BYTES, best_of(&tcp, false)),
            mib_per_s(STREAM_BYTES, best_of(&tcp, true)),
        );
        for read_buffer_bytes in [16 * 1024 + 512, 32 * 1024, 64 * 1024] {
            let server =
                ServerOptions { read_buffer_bytes, ..ServerOptions::new(vec![paths.clone()]) };
            let acceptor = TlsAcceptor::new(&server).unwrap();
            let client = fulcrum_tls::ClientOptions {
                ca_file: Some(paths.cert.clone()),
                read_buffer_bytes,
                ..Default::default()
            };
            let connector = TlsConnector::new(&client).unwrap();
            let tls: Vec<_> =
                (0..RUNS).map(|_| stream_run(uring, Some((&acceptor, &connector)))).collect();
            println!(
                "{driver:8} TLS, {:>2} KiB reads {:>6.0} MiB/s wall, {:>6.0} MiB per CPU-second",
                read_buffer_bytes >> 10,
                mib_per_s(STREAM_BYTES, best_of(&tls, false)),
                mib_per_s(STREAM_BYTES, best_of(&tls, true)),
            );
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}

type Ticketer = fn() -> Result<Arc<dyn rustls::server::ProducesTickets>, rustls::Error>;

/// Each provider compiled in, with its ticket encrypter.
fn providers() -> Vec<(&'static str, CryptoProvider, Ticketer)> {
    [
        #[cfg(feature = "aws-lc-rs")]
        (
            "aws-lc-rs",
            rustls::crypto::aws_lc_rs::default_provider(),
            rustls::crypto::aws_lc_rs::Ticketer::new as Ticketer,
        ),
        #[cfg(feature = "ring")]
        ("ring", rustls::crypto::ring::default_provider(), rustls::crypto::ring::Ticketer::new),
    ]
    .into_iter()
    .collect()
}

fn best(mut run: impl FnMut() -> Duration) -> Duration {
    (0..RUNS).map(|_| run()).min().unwrap()
}

fn mib_per_s(bytes: usize, took: Duration) -> f64 {
    bytes as f64 / (1 << 20) as f64 / took.as_secs_f64()
}

/// A server and a client configuration of one provider, one version and one group.
struct Pair {
    server: Arc<ServerConfig>,
    client: Arc<ClientConfig>,
}

impl Pair {
    fn new(
        provider: &CryptoProvider,
        ticketer: Ticketer,
        chain: &[CertificateDer<'static>],
        key: &PrivateKeyDer<'static>,
        version: &'static SupportedProtocolVersion,
        kx: &'static dyn SupportedKxGroup,
        suite: Option<CipherSuite>,
    ) -> Self {
        let mut provider = provider.clone();
        provider.kx_groups = vec![kx];
        if let Some(suite) = suite {
            provider.cipher_suites.retain(|s| s.suite() == suite);
        }
        let provider = Arc::new(provider);
        let mut server = ServerConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&[version])
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(chain.to_vec(), key.clone_key())
            .unwrap();
        server.ticketer = ticketer().unwrap();
        let mut roots = RootCertStore::empty();
        roots.add(chain[0].clone()).unwrap();
        let client = ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&[version])
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        Self { server: Arc::new(server), client: Arc::new(client) }
    }

    /// Runs `n` handshakes (resumed ones after one full handshake when `resume`); returns the
    /// time the server side spent.
    fn handshakes(&self, n: usize, resume: bool) -> Duration {
        let mut client = (*self.client).clone();
        client.resumption =
            if resume { Resumption::in_memory_sessions(64) } else { Resumption::disabled() };
        let client = Arc::new(client);
        if resume {
            self.connect(&client, &mut Duration::default());
        }
        let mut server_time = Duration::ZERO;
        for _ in 0..n {
            let (c, _) = self.connect(&client, &mut server_time);
            let resumed = c.handshake_kind() == Some(rustls::HandshakeKind::Resumed);
            assert_eq!(resumed, resume);
        }
        server_time
    }

    fn connect(
        &self,
        client: &Arc<ClientConfig>,
        server_time: &mut Duration,
    ) -> (Connection, Connection) {
        let name = ServerName::try_from("localhost").unwrap();
        let mut c = Connection::from(ClientConnection::new(client.clone(), name).unwrap());
        let t = ThreadTime::now();
        let mut s = Connection::from(ServerConnection::new(self.server.clone()).unwrap());
        *server_time += t.elapsed();
        let mut buf = Vec::new();
        while c.is_handshaking() || s.is_handshaking() || c.wants_write() || s.wants_write() {
            buf.clear();
            while c.wants_write() {
                c.write_tls(&mut buf).unwrap();
            }
            let t = ThreadTime::now();
            feed(&mut s, &buf);
            buf.clear();
            while s.wants_write() {
                s.write_tls(&mut buf).unwrap();
            }
            *server_time += t.elapsed();
            feed(&mut c, &buf);
        }
        (c, s)
    }

    /// Encrypts `total` bytes on the server side and decrypts them on the client side;
    /// returns the time of each.
    fn bulk(&self, total: usize) -> (Duration, Duration) {
        let (mut encrypt, mut decrypt) = (Duration::MAX, Duration::MAX);
        for _ in 0..RUNS {
            let (mut c, mut s) = self.connect(&self.client, &mut Duration::default());
            s.set_buffer_limit(None);
            let plain = vec![0x5au8; 16 * 1024];
            let mut sink = vec![0u8; 16 * 1024];
            let mut wire = Vec::with_capacity(4 * 17 * 1024);
            let (mut enc, mut dec) = (Duration::ZERO, Duration::ZERO);
            let mut done = 0;
            while done < total {
                let t = ThreadTime::now();
                wire.clear();
                for _ in 0..4 {
                    s.writer().write_all(&plain).unwrap();
                }
                while s.wants_write() {
                    s.write_tls(&mut wire).unwrap();
                }
                enc += t.elapsed();
                let t = ThreadTime::now();
                let mut rd = &wire[..];
                while !rd.is_empty() {
                    c.read_tls(&mut rd).unwrap();
                    c.process_new_packets().unwrap();
                    while let Ok(n) = c.reader().read(&mut sink) {
                        if n == 0 {
                            break;
                        }
                        done += n;
                    }
                }
                dec += t.elapsed();
            }
            encrypt = encrypt.min(enc);
            decrypt = decrypt.min(dec);
        }
        (encrypt, decrypt)
    }
}

fn feed(conn: &mut Connection, mut data: &[u8]) {
    while !data.is_empty() {
        conn.read_tls(&mut data).unwrap();
        conn.process_new_packets().unwrap();
    }
}

/// Sends `STREAM_BYTES` from a client task to a server task over loopback on one runtime,
/// through TLS (`tls` given) or plain TCP; returns the time until the server saw the end.
fn stream_run(uring: bool, tls: Option<(&TlsAcceptor, &TlsConnector)>) -> (Duration, Duration) {
    let run = async move {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let acceptor = tls.map(|(a, _)| a.clone());
        let server = monoio::spawn(async move {
            let (tcp, _) = listener.accept().await.unwrap();
            let mut buf = Vec::with_capacity(64 * 1024);
            let mut got = 0;
            match acceptor {
                Some(acceptor) => {
                    let mut tls = acceptor.accept(tcp, Duration::from_secs(10)).await.unwrap();
                    loop {
                        let (n, b) = tls.read(buf).await;
                        buf = b;
                        match n.unwrap() {
                            0 => break,
                            n => got += n,
                        }
                    }
                }
                None => {
                    let mut tcp = tcp;
                    loop {
                        let (n, b) = tcp.read(buf).await;
                        buf = b;
                        match n.unwrap() {
                            0 => break,
                            n => got += n,
                        }
                    }
                }
            }
            assert_eq!(got, STREAM_BYTES);
        });
        let tcp = TcpStream::connect(addr).await.unwrap();
        let start = (std::time::Instant::now(), ThreadTime::now());
        let chunk = vec![0x33u8; 64 * 1024];
        match tls {
            Some((_, connector)) => {
                let name = fulcrum_tls::server_name("localhost").unwrap();
                let mut tls =
                    connector.connect(tcp, name, &[], Duration::from_secs(10)).await.unwrap();
                send_all(&mut tls, &chunk).await;
                // Kept open until the server has read everything (closing a socket with unread
                // data, here the session tickets, would reset the connection).
                server.await;
            }
            None => {
                let mut tcp = tcp;
                send_all(&mut tcp, &chunk).await;
                server.await;
            }
        }
        (start.0.elapsed(), start.1.elapsed())
    };
    if uring {
        monoio::RuntimeBuilder::<monoio::IoUringDriver>::new()
            .enable_timer()
            .build()
            .unwrap()
            .block_on(run)
    } else {
        monoio::RuntimeBuilder::<monoio::LegacyDriver>::new()
            .enable_timer()
            .build()
            .unwrap()
            .block_on(run)
    }
}

async fn send_all<W: AsyncWriteRent>(w: &mut W, chunk: &[u8]) {
    let mut buf = chunk.to_vec();
    let mut sent = 0;
    while sent < STREAM_BYTES {
        let (res, b) = w.write_all(buf).await;
        res.unwrap();
        buf = b;
        sent += buf.len();
    }
    w.shutdown().await.unwrap();
}
