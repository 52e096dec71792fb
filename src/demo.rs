//! `--demo`: three tiny HTTP/1.1 backends on loopback, each answering with its own name, so a
//! newcomer can see Fulcrum balance with no other setup. `fulcrum demo-backend` runs one such
//! backend on its own (the compose stack's HTTP demo services). Not part of the data plane.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;

/// Starts `count` demo backends on `127.0.0.1` ephemeral ports; returns their URLs.
pub fn start_backends(count: usize) -> std::io::Result<Vec<String>> {
    (1..=count)
        .map(|n| {
            let listener = TcpListener::bind("127.0.0.1:0")?;
            let addr = listener.local_addr()?;
            let name: Arc<str> = format!("demo-{n}").into();
            std::thread::Builder::new()
                .name(name.to_string())
                .spawn(move || accept(listener, name))?;
            Ok(format!("http://{addr}"))
        })
        .collect()
}

/// `fulcrum demo-backend`: serves one demo backend named `name` on `listener` until the process
/// exits. Each answer is `hello from NAME (...)` with an `x-demo-backend: NAME` header.
pub fn serve_backend(listener: TcpListener, name: &str) {
    accept(listener, name.into());
}

fn accept(listener: TcpListener, name: Arc<str>) {
    for stream in listener.incoming().flatten() {
        let name = Arc::clone(&name);
        let _ = std::thread::Builder::new().spawn(move || serve(stream, &name));
    }
}

/// Answers keep-alive requests with `hello from NAME`; request bodies are read and dropped.
fn serve(stream: TcpStream, name: &str) -> std::io::Result<()> {
    let peer: SocketAddr = stream.peer_addr()?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut writer = stream;
    loop {
        let mut content_length = 0u64;
        let mut close = false;
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 {
            return Ok(());
        }
        let request_line = line.trim_end().to_owned();
        loop {
            line.clear();
            if reader.read_line(&mut line)? == 0 {
                return Ok(());
            }
            let header = line.trim_end();
            if header.is_empty() {
                break;
            }
            if let Some((field, value)) = header.split_once(':') {
                let value = value.trim();
                if field.eq_ignore_ascii_case("content-length") {
                    content_length = value.parse().unwrap_or(0);
                } else if field.eq_ignore_ascii_case("transfer-encoding") {
                    close = true; // demo backends do not decode chunked bodies
                } else if field.eq_ignore_ascii_case("connection")
                    && value.eq_ignore_ascii_case("close")
                {
                    close = true;
                }
            }
        }
        std::io::copy(&mut (&mut reader).take(content_length), &mut std::io::sink())?;
        let body = format!("hello from {name} ({request_line}, via {peer})\n");
        write!(
            writer,
            "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: {}\r\nx-demo-backend: {name}\r\n{}\r\n{body}",
            body.len(),
            if close { "connection: close\r\n" } else { "" },
        )?;
        if close {
            return Ok(());
        }
    }
}
