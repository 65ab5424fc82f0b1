//! The command line the lab's servers share (`labweb`, `labecho`): `--listen ADDR:PORT
//! --name NAME`. Included by each with `#[path]`; not an example of its own.

use std::net::SocketAddr;

use anyhow::{Context, bail};

/// `--listen` and `--name` from the process arguments; `program` names the usage line.
pub fn listen_and_name(program: &str) -> anyhow::Result<(SocketAddr, String)> {
    let usage = format!("usage: {program} --listen ADDR:PORT --name NAME");
    let mut listen = None;
    let mut name = None;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--listen" => {
                let v = args.next().context("--listen needs ADDR:PORT")?;
                listen = Some(
                    v.parse()
                        .with_context(|| format!("--listen {v:?}: not ADDR:PORT"))?,
                );
            }
            "--name" => name = Some(args.next().context("--name needs a value")?),
            "-h" | "--help" => {
                println!("{usage}");
                std::process::exit(0);
            }
            other => bail!("unknown argument {other:?}; {usage}"),
        }
    }
    Ok((
        listen.context("--listen ADDR:PORT is required")?,
        name.context("--name NAME is required")?,
    ))
}
