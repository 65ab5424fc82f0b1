//! `labprobe`: measures service outages through a VIP, for the lab and the failover
//! benchmark.
//!
//! It opens a new TCP connection to the target and sends `GET /` every `--interval-ms`,
//! independently of earlier probes (each has its own `--timeout-ms`), for `--duration-ms`.
//! It then prints the largest gap between two consecutive good answers (by the time each
//! probe was sent), with the server names seen before and after: "outage" as the anchors in
//! docs/benchmarks.md define it, at the resolution of the interval.
//!
//! Usage: `labprobe --target 192.0.2.10:80 [--interval-ms 2] [--timeout-ms 50]
//! [--duration-ms 3000]`. Output: one line `max_gap_ms=… from=… to=… ok=… failed=…
//! start_unix_ms=… first_change_ms=…`: the last two say when the probe started (wall clock,
//! for a script to relate to an event it caused) and when, after that, the first answer
//! from a server other than the first one answering arrived (`-` if none): the moment a VIP
//! answered from its new holder, as scripts/bench-ping.sh measures it.

// A measuring tool: the real time between answers is what it measures.
#![allow(clippy::disallowed_methods)]

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Context, bail};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

struct Args {
    target: SocketAddr,
    interval: Duration,
    timeout: Duration,
    duration: Duration,
}

fn parse_args() -> anyhow::Result<Args> {
    let mut target = None;
    let mut interval = Duration::from_millis(2);
    let mut timeout = Duration::from_millis(50);
    let mut duration = Duration::from_millis(3000);
    let mut args = std::env::args().skip(1);
    let ms = |v: Option<String>, what: &str| -> anyhow::Result<Duration> {
        let v = v.with_context(|| format!("{what} needs a number of milliseconds"))?;
        let n: u64 = v
            .parse()
            .with_context(|| format!("{what} {v:?}: not a number"))?;
        Ok(Duration::from_millis(n))
    };
    while let Some(a) = args.next() {
        match a.as_str() {
            "--target" => {
                let v = args.next().context("--target needs ADDR:PORT")?;
                target = Some(v.parse().with_context(|| format!("--target {v:?}"))?);
            }
            "--interval-ms" => interval = ms(args.next(), "--interval-ms")?,
            "--timeout-ms" => timeout = ms(args.next(), "--timeout-ms")?,
            "--duration-ms" => duration = ms(args.next(), "--duration-ms")?,
            other => bail!("unknown argument {other:?}; see the doc comment of labprobe"),
        }
    }
    if interval.is_zero() {
        bail!("--interval-ms must be at least 1");
    }
    Ok(Args {
        target: target.context("--target ADDR:PORT is required")?,
        interval,
        timeout,
        duration,
    })
}

/// One probe: connect, ask, read the name. `None` when anything fails or times out.
async fn probe(target: SocketAddr, timeout: Duration) -> Option<String> {
    let attempt = async {
        let mut s = TcpStream::connect(target).await.ok()?;
        s.write_all(b"GET / HTTP/1.0\r\n\r\n").await.ok()?;
        let mut buf = Vec::with_capacity(256);
        s.read_to_end(&mut buf).await.ok()?;
        let text = String::from_utf8_lossy(&buf);
        let body = text.split("\r\n\r\n").nth(1)?.trim().to_string();
        (!body.is_empty()).then_some(body)
    };
    tokio::time::timeout(timeout, attempt).await.ok().flatten()
}

fn main() -> anyhow::Result<()> {
    let args = parse_args()?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let start = Instant::now();
        let start_unix_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64() * 1000.0);
        let mut tasks = Vec::new();
        let mut tick = tokio::time::interval(args.interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
        while start.elapsed() < args.duration {
            let sent = tick.tick().await;
            tasks.push(tokio::spawn(async move {
                let answer = probe(args.target, args.timeout).await;
                (sent, answer, Instant::now())
            }));
        }
        let mut results = Vec::with_capacity(tasks.len());
        for t in tasks {
            if let Ok(r) = t.await {
                results.push(r);
            }
        }
        results.sort_by_key(|(sent, _, _)| *sent);
        // The first answer from another server than the first one, by when it arrived: an
        // upper bound on when that server answered, whatever delayed this process.
        let first = results.iter().find_map(|(_, r, _)| r.clone());
        let first_change = results
            .iter()
            .filter(|(_, r, _)| r.is_some() && *r != first)
            .map(|(_, _, received)| *received)
            .min()
            .map(|at| format!("{:.1}", (at - start).as_secs_f64() * 1000.0));
        let results: Vec<_> = results.into_iter().map(|(sent, r, _)| (sent, r)).collect();
        let ok = results.iter().filter(|(_, r)| r.is_some()).count();
        let failed = results.len() - ok;
        let mut last: Option<(Instant, &str)> = None;
        let mut worst = (Duration::ZERO, String::new(), String::new(), Duration::ZERO);
        for (sent, r) in &results {
            let Some(name) = r else { continue };
            if let Some((prev, prev_name)) = last {
                let gap = *sent - prev;
                if gap > worst.0 {
                    worst = (gap, prev_name.to_string(), name.clone(), prev - start);
                }
            }
            last = Some((*sent, name));
        }
        println!(
            "max_gap_ms={:.1} at_ms={:.1} from={} to={} ok={ok} failed={failed} start_unix_ms={start_unix_ms:.1} first_change_ms={}",
            worst.0.as_secs_f64() * 1000.0,
            worst.3.as_secs_f64() * 1000.0,
            if worst.1.is_empty() { "-" } else { &worst.1 },
            if worst.2.is_empty() { "-" } else { &worst.2 },
            first_change.as_deref().unwrap_or("-"),
        );
        Ok(())
    })
}
