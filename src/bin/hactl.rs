//! `hactl`: the operator's command line.

fn main() -> anyhow::Result<()> {
    anyhow::bail!("hactl: not wired up yet")
}
