//! `cargo xtask bench http`: requests/s of an HTTP server under `wrk`, bare and with chaos-user
//! counting its responses (`attach --no-syscalls`), in one run. Goal: under 5% fewer requests/s.
//! Three more configurations show the syscall monitor's cost on such a server: `attach --no-http`
//! (syscalls only), `attach` (both, the default; goal of issue 15: under 5% too) and the floor of
//! any syscall monitor, two raw_tp programs that return at once (`floor.rs`).
//!
//! Two servers: nginx (Debian's nginx-light, one worker, access log on), and the project's own
//! `chaos-workload serve` (a thread per connection). Both answer with a few syscalls and little
//! else, 100-180k requests/s on 2 cores: what chaos-user adds to each syscall weighs heavily.
use std::{
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use anyhow::{Context as _, bail};
use clap::{Args, ValueEnum};

use super::{
    floor::Floor,
    harness::{Daemon, attach_cgroup, last_cpu, load_average, median, pin},
};
use crate::{build, cgroup::Cgroup};

/// chaos-user may cost the server at most this fraction of its requests/s.
const GOAL: f64 = 0.05;

#[derive(Debug, Args)]
pub struct HttpArgs {
    /// Rounds per server; each runs wrk once per configuration, bare first.
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u32).range(1..))]
    pub runs: u32,
    /// Length of each wrk run.
    #[arg(long, default_value = "3s", value_parser = humantime::parse_duration)]
    pub duration: Duration,
    /// The servers to measure, in turn.
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "nginx,workload"
    )]
    pub servers: Vec<Server>,
}

#[derive(Debug, Clone, Copy, PartialEq, ValueEnum)]
pub enum Server {
    /// nginx, one worker process, `return 200` and an access log.
    Nginx,
    /// `chaos-workload serve`: a thread per connection, nothing but its syscalls.
    Workload,
}

impl Server {
    fn describe(self) -> &'static str {
        match self {
            Server::Nginx => "nginx (one worker, access log on)",
            Server::Workload => "`chaos-workload serve` (thread per connection)",
        }
    }
}

/// In `ALL` order, which is also the order of a round's rates.
#[derive(Clone, Copy, PartialEq)]
enum Config {
    Bare,
    /// Two empty raw_tp programs on the syscall tracepoints: what the monitor cannot go below.
    Floor,
    /// One empty program on `sys_exit`: the floor of a monitor that counts at exit alone.
    FloorExit,
    /// `attach --no-syscalls`: HTTP counting by itself, what the goal is about.
    HttpOnly,
    /// `attach --no-http`: the syscall monitor by itself.
    SyscallsOnly,
    /// `attach`: both.
    Both,
    /// `attach --no-latency`: both, the syscalls counted at exit alone.
    BothNoLatency,
}

impl Config {
    const ALL: [Config; 7] = [
        Config::Bare,
        Config::Floor,
        Config::FloorExit,
        Config::HttpOnly,
        Config::SyscallsOnly,
        Config::Both,
        Config::BothNoLatency,
    ];

    fn label(self) -> &'static str {
        match self {
            Config::Bare => "bare",
            Config::Floor => "floor: 2 empty raw_tp programs",
            Config::FloorExit => "floor at exit: 1 empty raw_tp program",
            Config::HttpOnly => "attach --no-syscalls (HTTP)",
            Config::SyscallsOnly => "attach --no-http (syscalls)",
            Config::Both => "attach (syscalls + HTTP)",
            Config::BothNoLatency => "attach --no-latency (syscalls + HTTP)",
        }
    }

    fn attach_flags(self) -> Option<&'static [&'static str]> {
        match self {
            Config::Bare | Config::Floor | Config::FloorExit => None,
            Config::HttpOnly => Some(&["--no-syscalls"]),
            Config::SyscallsOnly => Some(&["--no-http"]),
            Config::Both => Some(&[]),
            Config::BothNoLatency => Some(&["--no-latency"]),
        }
    }

    fn counts_http(self) -> bool {
        matches!(
            self,
            Config::HttpOnly | Config::Both | Config::BothNoLatency
        )
    }
}

/// Requests/s of one round, in `Config::ALL` order.
type Round = [f64; Config::ALL.len()];

pub fn run(args: &HttpArgs) -> anyhow::Result<()> {
    if Command::new("wrk").arg("-v").output().is_err() {
        bail!("wrk not found: apt-get install wrk (./run setup installs it)");
    }
    let chaos_user = build::chaos_user()?;
    let mut verdicts = Vec::new();
    for &server in &args.servers {
        verdicts.extend(measure(args, &chaos_user, server)?);
    }
    println!();
    for line in verdicts {
        println!("{line}");
    }
    Ok(())
}

/// Runs the rounds against `server` and prints its table; returns its goal lines.
fn measure(args: &HttpArgs, chaos_user: &Path, server: Server) -> anyhow::Result<Vec<String>> {
    let cgroup = Cgroup::create("syschaos-bench-http")?;
    let port = free_port()?;
    // The server on the last CPU, wrk on the first: they do not fight for one core.
    let server_cpu = last_cpu()?;
    let scratch = build::workspace_root().join("target").join("bench-http");
    let (mut command, path) = server_command(server, port, &scratch)?;
    cgroup.place(&mut command)?;
    pin(&mut command, server_cpu);
    let daemon = Daemon::spawn(&format!("{server:?} server"), &mut command)?;
    wait_for_port(port)?;
    let url = format!("http://127.0.0.1:{port}{path}");
    // This machine's speed drifts by more than the effect measured (other tenants): each
    // configuration is compared with the bare run of its own round, seconds apart, and the
    // median of those ratios is kept.
    let mut rounds: Vec<Round> = Vec::new();
    let mut last_counted = 0.0;
    for run in 1..=args.runs {
        let mut round = [0.0; Config::ALL.len()];
        for (&config, rate) in Config::ALL.iter().zip(&mut round) {
            let tracer = match config.attach_flags() {
                Some(flags) => Some(attach(chaos_user, &cgroup, flags)?),
                None => None,
            };
            let floor = match config {
                Config::Floor => Some(Floor::attach()?),
                Config::FloorExit => Some(Floor::attach_to(&["sys_exit"])?),
                _ => None,
            };
            *rate = wrk(&url, args.duration, server_cpu)?.requests_per_sec;
            drop(floor);
            if let Some(tracer) = tracer {
                let lines = tracer.stop()?;
                if config.counts_http() {
                    let counted = counted_responses(lines);
                    if counted <= 0.0 {
                        bail!(
                            "{}: chaos-user counted no HTTP response from {server:?}: the benchmark measured nothing",
                            config.label()
                        );
                    }
                    last_counted = counted;
                }
            }
            println!(
                "{server:?} run {run}/{}: {:<40} {rate:>10.0} requests/s",
                args.runs,
                config.label()
            );
        }
        rounds.push(round);
    }
    drop(daemon);
    println!("bench: load average {}", load_average());
    println!();
    println!(
        "wrk -t1 -c8 -d{:?} {url} against {}, {} rounds",
        args.duration,
        server.describe(),
        args.runs
    );
    Ok(report(server, &rounds, last_counted))
}

/// Prints the table of `server`'s rounds; returns its goal lines.
fn report(server: Server, rounds: &[Round], last_counted: f64) -> Vec<String> {
    println!(
        "{:<40} {:>12}  {:>8}  {:>17}",
        "configuration", "median req/s", "vs bare", "range over rounds"
    );
    for config in Config::ALL {
        let rates: Vec<f64> = rounds.iter().map(|round| round[config as usize]).collect();
        if config == Config::Bare {
            println!("{:<40} {:>12.0}", config.label(), median(&rates));
            continue;
        }
        let (change, low, high) = change(rounds, config, Config::Bare);
        println!(
            "{:<40} {:>12.0}  {:>+7.1}%  {:>+7.1}% .. {:+.1}%",
            config.label(),
            median(&rates),
            change * 100.0,
            low * 100.0,
            high * 100.0
        );
    }
    let (http_only, _, _) = change(rounds, Config::HttpOnly, Config::Bare);
    let (both, _, _) = change(rounds, Config::Both, Config::Bare);
    let (http_over_syscalls, _, _) = change(rounds, Config::Both, Config::SyscallsOnly);
    println!(
        "HTTP counting added to the syscall monitor (attach vs attach --no-http): {:+.1}% (medians of per-round ratios; the last run counted {last_counted:.0} responses)",
        http_over_syscalls * 100.0
    );
    let (floor, _, _) = change(rounds, Config::Floor, Config::Bare);
    let (no_latency, _, _) = change(rounds, Config::BothNoLatency, Config::Bare);
    let verdict = |change: f64| if -change < GOAL { "PASS" } else { "MISS" };
    vec![
        format!(
            "goal: under {:.0}% fewer requests/s, {server:?}, HTTP counting on (attach --no-syscalls): {:.1}% -> {}",
            GOAL * 100.0,
            -http_only * 100.0,
            verdict(http_only),
        ),
        format!(
            "goal: under {:.0}% fewer requests/s, {server:?}, syscalls and HTTP (attach): {:.1}% -> {} (the floor alone: {:.1}%)",
            GOAL * 100.0,
            -both * 100.0,
            verdict(both),
            -floor * 100.0,
        ),
        format!(
            "goal: under {:.0}% fewer requests/s, {server:?}, syscalls (no latency) and HTTP (attach --no-latency): {:.1}% -> {}",
            GOAL * 100.0,
            -no_latency * 100.0,
            verdict(no_latency),
        ),
    ]
}

/// Median, lowest and highest of `of / against - 1` over the rounds (each pair ran seconds
/// apart, so the machine's drift cancels out).
fn change(rounds: &[Round], of: Config, against: Config) -> (f64, f64, f64) {
    let changes: Vec<f64> = rounds
        .iter()
        .map(|round| round[of as usize] / round[against as usize] - 1.0)
        .collect();
    let low = changes.iter().copied().fold(f64::MAX, f64::min);
    let high = changes.iter().copied().fold(f64::MIN, f64::max);
    (median(&changes), low, high)
}

/// The server's command line and the path wrk asks for. nginx gets its own prefix under
/// `scratch` (config, logs, pid), and runs in the foreground as one process.
pub(super) fn server_command(
    server: Server,
    port: u16,
    scratch: &Path,
) -> anyhow::Result<(Command, &'static str)> {
    match server {
        Server::Workload => {
            let workload = build::release("tests", Some(build::MUSL))?.join("chaos-workload");
            let mut command = Command::new(workload);
            command.args(["serve", "--port", &port.to_string()]);
            Ok((command, "/status/200"))
        }
        Server::Nginx => {
            let nginx = PathBuf::from("/usr/sbin/nginx");
            if !nginx.is_file() {
                bail!("nginx not found: apt-get install nginx-light (./run setup installs it)");
            }
            let prefix = scratch.join("nginx");
            let file = prefix.join("static").join("file.txt");
            std::fs::create_dir_all(prefix.join("static"))
                .and_then(|()| std::fs::write(&file, "ok\n"))
                .with_context(|| format!("creating {}", file.display()))?;
            let config = prefix.join("nginx.conf");
            std::fs::write(&config, nginx_config(port, &prefix))
                .with_context(|| format!("writing {}", config.display()))?;
            let mut command = Command::new(nginx);
            command.arg("-p").arg(&prefix).arg("-c").arg(&config);
            Ok((command, "/"))
        }
    }
}

fn nginx_config(port: u16, prefix: &Path) -> String {
    let prefix = prefix.display();
    format!(
        "daemon off;
master_process off;
worker_processes 1;
pid {prefix}/nginx.pid;
error_log stderr warn;
events {{ worker_connections 1024; }}
http {{
    access_log {prefix}/access.log;
    client_body_temp_path {prefix}/body;
    proxy_temp_path {prefix}/proxy;
    fastcgi_temp_path {prefix}/fastcgi;
    uwsgi_temp_path {prefix}/uwsgi;
    scgi_temp_path {prefix}/scgi;
    server {{
        listen 127.0.0.1:{port};
        location / {{ return 200 \"ok\\n\"; }}
        # Opened at each request (no open_file_cache): bench inject's rules act on its openat.
        location /static/ {{ root {prefix}; }}
    }}
}}
"
    )
}

/// Waits until something accepts connections on 127.0.0.1:`port`.
pub(super) fn wait_for_port(port: u16) -> anyhow::Result<()> {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        if std::time::Instant::now() > deadline {
            bail!("no server listening on 127.0.0.1:{port} after 10s");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}

fn attach(chaos_user: &std::path::Path, cgroup: &Cgroup, extra: &[&str]) -> anyhow::Result<Daemon> {
    let mut args = vec!["--json", "--interval", "1s"];
    args.extend_from_slice(extra);
    attach_cgroup(chaos_user, &cgroup.path, &args)
}

/// What one `wrk --latency` run reports.
pub(super) struct WrkRun {
    pub requests_per_sec: f64,
    pub p99_ms: f64,
}

/// Runs `wrk -t1 -c8 --latency` against `url`.
pub(super) fn wrk(url: &str, duration: Duration, server_cpu: usize) -> anyhow::Result<WrkRun> {
    let mut command = Command::new("wrk");
    if server_cpu > 0 {
        pin(&mut command, 0);
    }
    let output = command
        .args([
            "-t1",
            "-c8",
            "--latency",
            &format!("-d{}s", duration.as_secs().max(1)),
            url,
        ])
        .output()
        .context("cannot run wrk")?;
    let text = String::from_utf8_lossy(&output.stdout);
    let requests_per_sec = text
        .lines()
        .find_map(|line| line.strip_prefix("Requests/sec:"))
        .and_then(|rate| rate.trim().parse().ok())
        .with_context(|| format!("no Requests/sec in wrk's output: {text}"))?;
    // The latency distribution's line `     99%    1.23ms`.
    let p99_ms = text
        .lines()
        .find_map(|line| line.trim().strip_prefix("99%"))
        .and_then(|value| milliseconds(value.trim()))
        .with_context(|| format!("no 99% latency in wrk's output: {text}"))?;
    Ok(WrkRun {
        requests_per_sec,
        p99_ms,
    })
}

/// `1.23ms`, `456.00us`, `1.50s` as milliseconds.
fn milliseconds(text: &str) -> Option<f64> {
    let split = text.find(|c: char| c.is_ascii_alphabetic())?;
    let (number, unit) = text.split_at(split);
    let number: f64 = number.parse().ok()?;
    match unit {
        "us" => Some(number / 1000.0),
        "ms" => Some(number),
        "s" => Some(number * 1000.0),
        "m" => Some(number * 60_000.0),
        _ => None,
    }
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
