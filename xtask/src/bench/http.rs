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
    /// Rounds; each runs wrk once per configuration, bare first.
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u32).range(1..))]
    pub runs: u32,
    /// Length of each wrk run.
    #[arg(long, default_value = "3s", value_parser = humantime::parse_duration)]
    pub duration: Duration,
}

#[derive(Clone, Copy, PartialEq)]
enum Config {
    Bare,
    Counting,
    Sampled,
}

impl Config {
    const ALL: [Config; 3] = [Config::Bare, Config::Counting, Config::Sampled];

    fn label(self) -> &'static str {
        match self {
            Config::Bare => "bare",
            Config::Counting => "chaos-user attach (HTTP counting on)",
            Config::Sampled => "  the same, --latency-sample 16",
        }
    }
}

/// Requests/s of one round, in `Config::ALL` order.
type Round = [f64; 3];

pub fn run(args: &HttpArgs) -> anyhow::Result<()> {
    if Command::new("wrk").arg("-v").output().is_err() {
        bail!("wrk not found: apt-get install wrk (./run setup installs it)");
    }
    let chaos_user = build::chaos_user()?;
    let workload = build::release("tests", Some(build::MUSL))?.join("chaos-workload");
    let cgroup = Cgroup::create("syschaos-bench-http")?;
    let port = free_port()?;
    // The server on the last CPU, wrk on the first: they do not fight for one core.
    let server_cpu = last_cpu()?;
    let mut command = Command::new(&workload);
    command.args(["serve", "--port", &port.to_string()]);
    cgroup.place(&mut command)?;
    pin(&mut command, server_cpu);
    let mut server = Daemon::spawn("chaos-workload serve", &mut command)?;
    server.wait_for(|line| line.contains("ready"), Duration::from_secs(10))?;

    let url = format!("http://127.0.0.1:{port}/status/200");
    // This machine's speed drifts by more than the effect measured (other tenants): each
    // configuration is compared with the bare run of its own round, seconds apart, and the
    // median of those ratios is kept.
    let mut rounds: Vec<Round> = Vec::new();
    let mut last_counted = 0.0;
    for run in 1..=args.runs {
        let mut round = [0.0; 3];
        for (config, rate) in Config::ALL.iter().zip(&mut round) {
            let tracer = match config {
                Config::Bare => None,
                Config::Counting => Some(attach(&chaos_user, &cgroup, &[])?),
                Config::Sampled => Some(attach(&chaos_user, &cgroup, &["--latency-sample", "16"])?),
            };
            *rate = wrk(&url, args.duration, server_cpu)?;
            if let Some(tracer) = tracer {
                last_counted = counted_responses(tracer.stop()?);
            }
            println!(
                "run {run}/{}: {:<40} {rate:>10.0} requests/s",
                args.runs,
                config.label()
            );
        }
        rounds.push(round);
    }
    drop(server);
    if last_counted <= 0.0 {
        bail!("chaos-user counted no HTTP response: the benchmark measured nothing");
    }

    println!("bench: load average {}", load_average());
    println!();
    println!(
        "wrk -t1 -c8 -d{:?} {url} against `chaos-workload serve` (thread per connection), {} rounds",
        args.duration, args.runs
    );
    println!(
        "{:<40} {:>12}  {:>8}  {:>17}",
        "configuration", "median req/s", "vs bare", "range over rounds"
    );
    let losses: Vec<f64> = Config::ALL
        .iter()
        .enumerate()
        .map(|(i, config)| {
            let rates: Vec<f64> = rounds.iter().map(|round| round[i]).collect();
            let changes: Vec<f64> = rounds.iter().map(|r| r[i] / r[0] - 1.0).collect();
            let (low, high) = changes
                .iter()
                .fold((f64::MAX, f64::MIN), |(l, h), &c| (l.min(c), h.max(c)));
            let change = median(&changes);
            if *config == Config::Bare {
                println!("{:<40} {:>12.0}", config.label(), median(&rates));
            } else {
                println!(
                    "{:<40} {:>12.0}  {:>+7.1}%  {:>+7.1}% .. {:+.1}%",
                    config.label(),
                    median(&rates),
                    change * 100.0,
                    low * 100.0,
                    high * 100.0
                );
            }
            -change
        })
        .collect();
    for (label, loss) in [
        ("every call timed", losses[1]),
        ("latency sampled", losses[2]),
    ] {
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
fn wrk(url: &str, duration: Duration, server_cpu: usize) -> anyhow::Result<f64> {
    let mut command = Command::new("wrk");
    if server_cpu > 0 {
        pin(&mut command, 0);
    }
    let output = command
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
