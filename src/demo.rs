//! `--demo`: three tiny HTTP/1.1 backends on loopback, each answering with its own name, so a
//! newcomer can see Fulcrum balance with no other setup. Not part of the data plane.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};

/// Starts `count` demo backends on `127.0.0.1` ephemeral ports; returns their URLs.
pub fn start_backends(count: usize) -> std::io::Result<Vec<String>> {
    (1..=count)
        .map(|n| {
            let listener = TcpListener::bind("127.0.0.1:0")?;
            let addr = listener.local_addr()?;
            std::thread::Builder::new()
                .name(format!("demo-{n}"))
                .spawn(move || accept(listener, n))?;
            Ok(format!("http://{addr}"))
        })
        .collect()
}

fn accept(listener: TcpListener, n: usize) {
    for stream in listener.incoming().flatten() {
        let _ = std::thread::Builder::new().spawn(move || serve(stream, n));
    }
}

/// Answers keep-alive requests with `hello from demo-N`; request bodies are read and dropped.
fn serve(stream: TcpStream, n: usize) -> std::io::Result<()> {
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
            if let Some((name, value)) = header.split_once(':') {
                let value = value.trim();
                if name.eq_ignore_ascii_case("content-length") {
                    content_length = value.parse().unwrap_or(0);
                } else if name.eq_ignore_ascii_case("transfer-encoding") {
                    close = true; // demo backends do not decode chunked bodies
                } else if name.eq_ignore_ascii_case("connection")
                    && value.eq_ignore_ascii_case("close")
                {
                    close = true;
                }
            }
        }
        std::io::copy(&mut (&mut reader).take(content_length), &mut std::io::sink())?;
        let body = format!("hello from demo-{n} ({request_line}, via {peer})\n");
        write!(
            writer,
            "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: {}\r\nx-demo-backend: demo-{n}\r\n{}\r\n{body}",
            body.len(),
            if close { "connection: close\r\n" } else { "" },
        )?;
        if close {
            return Ok(());
        }
    }
}
