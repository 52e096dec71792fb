//! Packaging: the subcommands the container image relies on (`fulcrum healthcheck`,
//! `fulcrum demo-backend`) and the compose stack's configuration file, checked with the real
//! binary. The Dockerfile, compose file and GitLab pipeline themselves are linted by
//! `.ci/packaging` (no Docker engine here).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use fulcrum::config::Config;

use crate::harness::refusing_port;

const BIN: &str = env!("CARGO_BIN_EXE_fulcrum");

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `fulcrum demo-backend` on an ephemeral port and returns the port it logged.
fn demo_backend(name: &str) -> (Killed, u16) {
    let mut child = Command::new(BIN)
        .args(["demo-backend", "--listen", "127.0.0.1:0", "--name", name])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let child = Killed(child);
    // `msg="demo backend listening" addr=127.0.0.1:PORT name=NAME`
    let line = BufReader::new(stderr).lines().next().unwrap().unwrap();
    assert!(line.contains("demo backend listening") && line.contains(name), "{line}");
    let addr = line.split_whitespace().find_map(|kv| kv.strip_prefix("addr=")).unwrap();
    let port = addr.rsplit_once(':').unwrap().1.parse().unwrap();
    (child, port)
}

fn healthcheck(url: &str) -> Output {
    Command::new(BIN).args(["healthcheck", "--url", url, "--timeout", "3s"]).output().unwrap()
}

#[test]
fn demo_backend_answers_with_its_name() {
    let (_child, port) = demo_backend("demo-http-7");
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(b"GET /x HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n").unwrap();
    let mut answer = String::new();
    s.read_to_string(&mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 200 OK\r\n"), "{answer}");
    assert!(answer.contains("x-demo-backend: demo-http-7\r\n"), "{answer}");
    assert!(answer.contains("hello from demo-http-7 (GET /x HTTP/1.1"), "{answer}");
}

#[test]
fn healthcheck_exit_codes() {
    let (_child, port) = demo_backend("probe-me");
    let ok = healthcheck(&format!("http://127.0.0.1:{port}/healthz"));
    assert!(ok.status.success(), "{ok:?}");
    assert!(String::from_utf8_lossy(&ok.stdout).contains("HTTP/1.1 200 OK"), "{ok:?}");
    let tcp = healthcheck(&format!("tcp://127.0.0.1:{port}"));
    assert!(tcp.status.success(), "{tcp:?}");

    let (_socket, closed) = refusing_port();
    for url in [format!("http://{closed}/healthz"), format!("tcp://{closed}")] {
        let out = healthcheck(&url);
        assert_eq!(out.status.code(), Some(1), "{url}: {out:?}");
        assert!(String::from_utf8_lossy(&out.stderr).starts_with("unhealthy: "), "{out:?}");
    }
    let bad = healthcheck("localhost:9090");
    assert_eq!(bad.status.code(), Some(1), "{bad:?}");
}

/// A non-2xx answer is unhealthy (the admin API's /readyz answers 503 when no backend is up).
#[test]
fn healthcheck_wants_2xx() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        let mut head = Vec::new();
        let mut buf = [0u8; 1024];
        while !head.ends_with(b"\r\n\r\n") {
            let n = s.read(&mut buf).unwrap();
            assert!(n > 0, "probe closed before its head ended");
            head.extend_from_slice(&buf[..n]);
        }
        s.write_all(b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\n\r\n").unwrap();
    });
    let out = healthcheck(&format!("http://127.0.0.1:{port}/readyz"));
    server.join().unwrap();
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("503"), "{out:?}");
}

/// deploy/fulcrum.toml is a valid configuration once its compose service names resolve (here
/// they are swapped for loopback addresses), and matches what the Dockerfile and compose file assume.
#[test]
fn compose_config_file_is_valid() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(root.join("deploy/fulcrum.toml")).unwrap();
    let mut hosts = Vec::new();
    let local: String = text
        .lines()
        .map(|line| match line.strip_prefix("url = \"").and_then(|r| r.split_once("://")) {
            Some((scheme, rest)) => {
                let (host, port) = rest.split_once(':').unwrap();
                hosts.push(host.to_owned());
                // One loopback address per backend, so equal ports stay distinct URLs.
                format!("url = \"{scheme}://127.0.0.{}:{port}\n", hosts.len())
            }
            None => format!("{line}\n"),
        })
        .collect();
    let dir = std::env::temp_dir().join(format!("fulcrum-packaging-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("fulcrum.toml");
    std::fs::write(&file, local).unwrap();
    let config = Config::from_file(&file);
    let _ = std::fs::remove_dir_all(&dir);
    let config = config.unwrap();

    assert_eq!(config.listen.to_string(), "0.0.0.0:8080");
    assert_eq!(config.admin_listen.to_string(), "0.0.0.0:9090");
    assert_eq!(config.state_file.as_deref(), Some(Path::new("/var/lib/fulcrum/state.json")));
    assert!(config.admin.jwt_secret.is_none(), "the secret comes from FULCRUM_JWT_SECRET");
    let urls: Vec<&str> = config.backends.iter().map(|b| b.url.as_str()).collect();
    assert_eq!(urls.iter().filter(|u| u.starts_with("http://")).count(), 3, "{urls:?}");
    assert_eq!(urls.iter().filter(|u| u.starts_with("h2c://")).count(), 2, "{urls:?}");

    // Each backend is a compose service; the image's HEALTHCHECK probes the admin port above.
    let compose = std::fs::read_to_string(root.join("docker-compose.yml")).unwrap();
    for host in &hosts {
        assert!(compose.contains(&format!("\n  {host}:\n")), "{host} is not a compose service");
    }
    let dockerfile = std::fs::read_to_string(root.join("Dockerfile")).unwrap();
    assert!(dockerfile.contains("\"http://127.0.0.1:9090/healthz\""));
    assert!(dockerfile.contains("EXPOSE 8080 9090"));
}
