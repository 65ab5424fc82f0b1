//! `labweb`: a tiny HTTP server for the namespace lab (scripts/lab.sh).
//!
//! Each lab real server runs one; it answers every `GET`/`HEAD` with its own name, so a
//! client looping over the VIP sees which real server the director chose. std only, one
//! thread per connection, bounded request size and read timeout.
//!
//! Usage: `labweb --listen ADDR:PORT --name NAME`

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::Duration;

use anyhow::Context;

#[path = "lab/server_args.rs"]
mod server_args;

/// Largest request head accepted.
const MAX_HEAD: usize = 8192;
/// How long a client may take to send its request.
const READ_TIMEOUT: Duration = Duration::from_secs(5);

fn serve(mut s: TcpStream, name: &str) -> std::io::Result<()> {
    s.set_read_timeout(Some(READ_TIMEOUT))?;
    let mut head = Vec::with_capacity(512);
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") && !head.windows(2).any(|w| w == b"\n\n") {
        let n = s.read(&mut buf)?;
        if n == 0 || head.len() + n > MAX_HEAD {
            break;
        }
        head.extend_from_slice(&buf[..n]);
    }
    let method = head.split(|b| *b == b' ').next().unwrap_or_default();
    let (status, body) = match method {
        b"GET" | b"HEAD" => ("200 OK", format!("{name}\n")),
        _ => ("405 Method Not Allowed", "only GET\n".to_string()),
    };
    let mut resp = format!(
        "HTTP/1.0 {status}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    if method != b"HEAD" {
        resp.push_str(&body);
    }
    s.write_all(resp.as_bytes())
}

fn main() -> anyhow::Result<()> {
    let (listen, name) = server_args::listen_and_name("labweb")?;
    let listener = TcpListener::bind(listen).with_context(|| format!("bind {listen}"))?;
    eprintln!("labweb {name} listening on {listen}");
    for conn in listener.incoming() {
        match conn {
            Ok(s) => {
                let name = name.clone();
                std::thread::spawn(move || {
                    if let Err(e) = serve(s, &name) {
                        eprintln!("labweb: {e}");
                    }
                });
            }
            Err(e) => eprintln!("labweb: accept: {e}"),
        }
    }
    Ok(())
}
