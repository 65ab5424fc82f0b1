//! `hbd`: the cluster daemon.

fn main() -> anyhow::Result<()> {
    anyhow::bail!("hbd: not wired up yet")
}
