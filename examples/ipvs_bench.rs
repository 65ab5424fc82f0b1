//! `ipvs_bench`: the 10,000-real figures on a kernel with IPVS (the VM tier's `bench`
//! scenario, `HBD_VM_ONLY=bench bash scripts/vm-ipvs.sh`): 100 TCP services × 100 masq reals
//! programmed in one reconcile, then one weight change at a time, as the nftables benchmark
//! in tests/e2e/dataplane.rs does. It removes what it programmed before it exits.
//!
//! Output: `VM-FIGURE name value` lines.

// A measuring tool: the real time an apply takes is what it measures.
#![allow(clippy::disallowed_methods)]

use std::collections::HashSet;
use std::time::{Duration, Instant};

use hbd::dataplane::ipvs::Ipvs;
use hbd::dataplane::{Dataplane, ServiceKey};

#[path = "lab/ten_thousand_reals.rs"]
mod ten_thousand_reals;

fn main() -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread().build()?;
    let mut ipvs = Ipvs::open()?;
    let mut desired = ten_thousand_reals::ten_thousand_reals();
    let own: HashSet<ServiceKey> = desired.iter().map(|v| v.key).collect();
    let t = Instant::now();
    let r = rt.block_on(ipvs.reconcile(&desired, &own))?;
    let full = t.elapsed();
    anyhow::ensure!(
        r.changes.len() == 100 + 10_000,
        "{} changes",
        r.changes.len()
    );
    println!("VM-FIGURE apply-10000-reals-ms {:.1}", ms(full));
    let t = Instant::now();
    let listed = rt.block_on(ipvs.list())?;
    println!("VM-FIGURE list-10000-reals-ms {:.1}", ms(t.elapsed()));
    anyhow::ensure!(listed.iter().map(|v| v.reals.len()).sum::<usize>() == 10_000);
    // One change through a reconcile (lists the kernel, diffs, applies one EditReal).
    let mut times = Vec::new();
    for i in 0..10u32 {
        desired[42].reals[7].weight = 5 + i % 2;
        let t = Instant::now();
        let r = rt.block_on(ipvs.reconcile(&desired, &own))?;
        times.push(t.elapsed());
        anyhow::ensure!(r.changes.len() == 1);
    }
    times.sort();
    println!(
        "VM-FIGURE one-change-reconcile-ms median {:.2} max {:.2}",
        ms(times[times.len() / 2]),
        ms(times[times.len() - 1])
    );
    // The change alone, as the director applies a check's result (no listing).
    let mut applies = Vec::new();
    for i in 0..20u32 {
        let mut r = desired[42].reals[7];
        r.weight = 7 + i % 2;
        let change = hbd::dataplane::Change::EditReal(desired[42].key, r);
        let t = Instant::now();
        rt.block_on(ipvs.apply(&[change]))?;
        applies.push(t.elapsed());
    }
    applies.sort();
    println!(
        "VM-FIGURE one-change-apply-ms median {:.3} max {:.3}",
        ms(applies[applies.len() / 2]),
        ms(applies[applies.len() - 1])
    );
    rt.block_on(ipvs.reconcile(&[], &own))?;
    Ok(())
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}
