//! `cargo xtask bench ...`
use clap::Subcommand;

#[derive(Debug, Subcommand)]
pub enum Bench {
    /// dd bs=1 in a cgroup: bare, under chaos-user attach, and under equivalent bpftrace scripts.
    Monitor,
}

pub fn run(bench: Bench) -> anyhow::Result<()> {
    match bench {
        Bench::Monitor => anyhow::bail!("bench monitor: not written yet"),
    }
}
