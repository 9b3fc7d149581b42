//! `cargo xtask bench ...`
mod floor;
mod harness;
mod http;
pub mod inject;
mod inject_http;
mod inject_vm;
mod monitor;

use clap::{Args, Subcommand};

#[derive(Debug, Subcommand)]
pub enum Bench {
    /// dd bs=1 in a cgroup: bare, under chaos-user attach, and under equivalent bpftrace scripts.
    Monitor(MonitorArgs),
    /// The same injection by chaos-user's ptrace engine and by strace -e inject, on dd bs=1.
    Ptrace(crate::bench_ptrace::PtraceArgs),
    /// requests/s of an HTTP server under wrk, bare and with chaos-user counting its responses.
    Http(http::HttpArgs),
    /// nginx under wrk with a never-matching rule on each engine of this host; getppid and
    /// connect under chaos-user inject (1, 1000 rules), attach and strace -e inject; then getppid
    /// and openat with the kprobe engine in the override VM.
    Inject(inject::InjectArgs),
}

#[derive(Debug, Args)]
pub struct MonitorArgs {
    /// dd runs per configuration; the table shows the median.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..))]
    pub runs: u32,
}

pub fn run(bench: Bench) -> anyhow::Result<()> {
    match bench {
        Bench::Monitor(args) => monitor::run(&args),
        Bench::Ptrace(args) => crate::bench_ptrace::run(&args),
        Bench::Inject(args) => inject::run(&args),
        Bench::Http(args) => http::run(&args),
    }
}
