//! `cargo xtask bench http`: requests/s of an HTTP server under `wrk`, bare and with chaos-user
//! counting its responses, in one run. Goal: under 5% fewer requests/s.
use std::{process::Command, time::Duration};

use anyhow::{Context as _, bail};
use clap::Args;

use super::harness::{Daemon, attach_cgroup, last_cpu, load_average, median, pin};
use crate::{build, cgroup::Cgroup};

/// chaos-user may cost the server at most this fraction of its requests/s.
const GOAL: f64 = 0.05;

#[derive(Debug, Args)]
pub struct HttpArgs {
    /// wrk runs per configuration; the table shows the median.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..))]
    pub runs: u32,
    /// Length of each wrk run.
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    pub duration: Duration,
}

#[derive(Clone, Copy, PartialEq)]
enum Config {
    Bare,
    Counting,
    Sampled,
}

impl Config {
    fn label(self) -> &'static str {
        match self {
            Config::Bare => "bare",
            Config::Counting => "chaos-user attach (HTTP counting on)",
            Config::Sampled => "  the same, --latency-sample 16",
        }
    }
}

pub fn run(args: &HttpArgs) -> anyhow::Result<()> {
    if Command::new("wrk").arg("-v").output().is_err() {
        bail!("wrk not found: apt-get install wrk (./run setup installs it)");
    }
    let chaos_user = build::chaos_user()?;
    let workload = build::release("tests", Some(build::MUSL))?.join("chaos-workload");
    let cgroup = Cgroup::create("syschaos-bench-http")?;
    let port = free_port()?;
    // The server on the last CPU, wrk on the others: they do not fight for one core.
    let server_cpu = last_cpu()?;
    let mut command = Command::new(&workload);
    command.args(["serve", "--port", &port.to_string()]);
    cgroup.place(&mut command)?;
    pin(&mut command, server_cpu);
    let mut server = Daemon::spawn("chaos-workload serve", &mut command)?;
    server.wait_for(|line| line.contains("ready"), Duration::from_secs(10))?;

    let url = format!("http://127.0.0.1:{port}/status/200");
    let mut results: Vec<(Config, Vec<f64>)> = [Config::Bare, Config::Counting, Config::Sampled]
        .into_iter()
        .map(|config| (config, Vec::new()))
        .collect();
    let mut last_counted = 0.0;
    for run in 1..=args.runs {
        for (config, rates) in &mut results {
            let tracer = match config {
                Config::Bare => None,
                Config::Counting => Some(attach(&chaos_user, &cgroup, &[])?),
                Config::Sampled => Some(attach(&chaos_user, &cgroup, &["--latency-sample", "16"])?),
            };
            let rate = wrk(&url, args.duration)?;
            if let Some(tracer) = tracer {
                last_counted = counted_responses(tracer.stop()?);
            }
            println!(
                "run {run}/{}: {:<40} {rate:>10.0} requests/s",
                args.runs,
                config.label()
            );
            rates.push(rate);
        }
    }
    drop(server);
    if last_counted <= 0.0 {
        bail!("chaos-user counted no HTTP response: the benchmark measured nothing");
    }

    println!("bench: load average {}", load_average());
    println!();
    println!(
        "wrk -t1 -c8 -d{:?} {url} against `chaos-workload serve` (thread per connection), median of {} runs",
        args.duration, args.runs
    );
    let bare = median(&results[0].1);
    for (config, rates) in &results {
        let rate = median(rates);
        let loss = 1.0 - rate / bare;
        println!(
            "{:<40} {rate:>10.0} requests/s  {:>+6.1}%",
            config.label(),
            -loss * 100.0
        );
    }
    for (label, rates) in [
        ("every call timed", &results[1].1),
        ("latency sampled", &results[2].1),
    ] {
        let loss = 1.0 - median(rates) / bare;
        let verdict = if loss < GOAL { "PASS" } else { "MISS" };
        println!(
            "goal: under {:.0}% fewer requests/s with HTTP counting on ({label}): {:.1}% -> {verdict}",
            GOAL * 100.0,
            loss * 100.0
        );
    }
    println!(
        "(the full monitor runs too: every syscall of the server is counted; last run counted {last_counted:.0} responses)"
    );
    Ok(())
}

fn attach(chaos_user: &std::path::Path, cgroup: &Cgroup, extra: &[&str]) -> anyhow::Result<Daemon> {
    let mut args = vec!["--json", "--interval", "1s"];
    args.extend_from_slice(extra);
    attach_cgroup(chaos_user, &cgroup.path, &args)
}

/// Requests/s that `wrk` reports.
fn wrk(url: &str, duration: Duration) -> anyhow::Result<f64> {
    let output = Command::new("wrk")
        .args([
            "-t1",
            "-c8",
            &format!("-d{}s", duration.as_secs().max(1)),
            url,
        ])
        .output()
        .context("cannot run wrk")?;
    let text = String::from_utf8_lossy(&output.stdout);
    text.lines()
        .find_map(|line| line.strip_prefix("Requests/sec:"))
        .and_then(|rate| rate.trim().parse().ok())
        .with_context(|| format!("no Requests/sec in wrk's output: {text}"))
}

/// Total responses in the last JSON snapshot chaos-user printed.
fn counted_responses(lines: Vec<String>) -> f64 {
    lines
        .iter()
        .rev()
        .find_map(|line| {
            let start = line.find("\"responses_total\":")? + "\"responses_total\":".len();
            let digits: String = line[start..]
                .chars()
                .take_while(char::is_ascii_digit)
                .collect();
            digits.parse().ok()
        })
        .unwrap_or(0.0)
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}
