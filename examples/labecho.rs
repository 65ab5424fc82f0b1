//! `labecho`: a line echo server for the namespace lab, to hold long-lived TCP connections
//! through a VIP (tests/e2e/conntrackd.rs).
//!
//! Each line a client sends comes back as `NAME#SERIAL LINE`: NAME says which real server
//! answered, SERIAL is the number of the connection this server accepted (1, 2, …), so a
//! client sees both a change of server and a new connection to the same server. std only,
//! one thread per connection, lines bounded in length.
//!
//! Usage: `labecho --listen ADDR:PORT --name NAME`

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};

use anyhow::Context;

#[path = "lab/server_args.rs"]
mod server_args;

/// Longest line echoed; a longer one ends the connection.
const MAX_LINE: usize = 4096;

fn serve(s: TcpStream, tag: &str) -> std::io::Result<()> {
    let mut out = s.try_clone()?;
    let mut lines = BufReader::new(s);
    let mut line = String::new();
    loop {
        line.clear();
        let n = (&mut lines).take(MAX_LINE as u64).read_line(&mut line)?;
        if n == 0 || !line.ends_with('\n') {
            return Ok(());
        }
        out.write_all(format!("{tag} {line}").as_bytes())?;
    }
}

fn main() -> anyhow::Result<()> {
    let (listen, name) = server_args::listen_and_name("labecho")?;
    let listener = TcpListener::bind(listen).with_context(|| format!("bind {listen}"))?;
    eprintln!("labecho {name} listening on {listen}");
    for (serial, conn) in (1u64..).zip(listener.incoming()) {
        match conn {
            Ok(s) => {
                let tag = format!("{name}#{serial}");
                std::thread::spawn(move || {
                    if let Err(e) = serve(s, &tag) {
                        eprintln!("labecho {tag}: {e}");
                    }
                });
            }
            Err(e) => eprintln!("labecho: accept: {e}"),
        }
    }
    Ok(())
}
