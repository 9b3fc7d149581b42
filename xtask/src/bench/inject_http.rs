//! `cargo xtask bench inject`, first part: what a rule costs a real server. nginx (one worker, as
//! `bench http` runs it) serves a static file under wrk, so each request opens it: bare, under
//! `attach`, and under a rule on `openat` that never matches (its path prefix names nothing),
//! once per engine this host offers, in paired rounds. Then 1% of those `openat` calls delayed
//! 1 ms by the stop engine: the p99 latency shift against the ideal.
use std::{path::Path, process::Command, time::Duration};

use anyhow::{Context as _, bail, ensure};

use super::{
    harness::{Daemon, attach_cgroup, last_cpu, median, pin},
    http::{Server, WrkRun, server_command, wait_for_port, wrk},
};
use crate::{build, cgroup::Cgroup};

/// With the stop engine, a rule that never matches keeps at least this share of `attach` alone.
const GOAL: f64 = 0.95;
const NEVER: &str = "openat=EACCES,path-prefix=/nonexistent";
const DELAY: &str = "openat,delay=1ms,probability=0.01,engine=stop";
/// The delayed share and length of `DELAY`.
const DELAY_MS: f64 = 1.0;

#[derive(Clone, PartialEq)]
enum Config {
    Bare,
    Attach,
    /// The never-matching rule forced on this engine.
    Never(&'static str),
    Delay,
    /// A rule of `--also-rule`.
    Also(String),
}

impl Config {
    fn label(&self) -> String {
        match self {
            Config::Bare => "bare".into(),
            Config::Attach => "attach (monitor only)".into(),
            Config::Never(engine) => format!("never-matching openat rule, engine={engine}"),
            Config::Delay => "1% of openat delayed 1 ms, engine=stop".into(),
            Config::Also(rule) => rule.clone(),
        }
    }

    fn rule(&self) -> Option<String> {
        match self {
            Config::Bare | Config::Attach => None,
            Config::Never(engine) => Some(format!("{NEVER},engine={engine}")),
            Config::Delay => Some(DELAY.into()),
            Config::Also(rule) => Some(rule.clone()),
        }
    }
}

pub fn run(args: &super::inject::InjectArgs, chaos_user: &Path) -> anyhow::Result<()> {
    let (runs, duration) = (args.runs, args.wrk_duration);
    if Command::new("wrk").arg("-v").output().is_err() {
        bail!("wrk not found: apt-get install wrk (./run setup installs it)");
    }
    let engines = working_engines(chaos_user)?;
    let mut configs = vec![Config::Bare, Config::Attach];
    for engine in ["stop", "ptrace"] {
        if engines.iter().any(|e| e == engine) {
            configs.push(Config::Never(engine));
        } else {
            println!("bench inject: the {engine} engine does not work here: not measured");
        }
    }
    if engines.iter().any(|e| e == "stop") {
        configs.push(Config::Delay);
    }
    configs.extend(args.also_rules.iter().cloned().map(Config::Also));
    let cgroup = Cgroup::create("syschaos-bench-inject-http")?;
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let server_cpu = last_cpu()?;
    let scratch = build::workspace_root().join("target").join("bench-inject");
    let (mut command, _) = server_command(Server::Nginx, port, &scratch)?;
    cgroup.place(&mut command)?;
    pin(&mut command, server_cpu);
    let _nginx = Daemon::spawn("nginx", &mut command)?;
    wait_for_port(port)?;
    let url = format!("http://127.0.0.1:{port}/static/file.txt");
    let mut rounds: Vec<Vec<WrkRun>> = Vec::new();
    for round in 1..=runs {
        let mut results = Vec::new();
        for config in &configs {
            let daemon = start(chaos_user, &cgroup, config)?;
            let result = wrk(&url, duration, server_cpu)?;
            if let Some(daemon) = daemon {
                check(config, daemon.stop()?)?;
            }
            println!(
                "nginx round {round}/{runs}: {:<52} {:>9.0} req/s  p99 {:>7.3} ms",
                config.label(),
                result.requests_per_sec,
                result.p99_ms
            );
            results.push(result);
        }
        rounds.push(results);
    }
    report(&configs, &rounds, duration, runs);
    Ok(())
}

/// The engines `doctor --json` says work here.
fn working_engines(chaos_user: &Path) -> anyhow::Result<Vec<String>> {
    let output = Command::new(chaos_user)
        .args(["doctor", "--json"])
        .output()
        .context("chaos-user doctor")?;
    let doctor: serde_json::Value =
        serde_json::from_slice(&output.stdout).context("doctor --json is not JSON")?;
    let engines = doctor
        .get("engines")
        .and_then(|e| e.as_array())
        .context("doctor --json has no engines")?;
    Ok(engines
        .iter()
        .filter(|engine| engine.get("works").and_then(|w| w.as_bool()) == Some(true))
        .filter_map(|engine| engine.get("engine")?.as_str().map(str::to_owned))
        .collect())
}

/// chaos-user for `config` (None for bare), attached before it returns.
fn start(chaos_user: &Path, cgroup: &Cgroup, config: &Config) -> anyhow::Result<Option<Daemon>> {
    let Some(rule) = config.rule() else {
        return match config {
            Config::Bare => Ok(None),
            _ => attach_cgroup(chaos_user, &cgroup.path, &[]).map(Some),
        };
    };
    let mut command = Command::new(chaos_user);
    command
        .args(["inject", "--no-metrics", "--cgroup"])
        .arg(&cgroup.path)
        .args(["--rule", &rule]);
    let mut daemon = Daemon::spawn("chaos-user inject", &mut command)?;
    daemon.wait_for(
        |line| line.starts_with("syschaos: injecting"),
        Duration::from_secs(60),
    )?;
    Ok(Some(daemon))
}

/// The rule ran on its engine and injected what it should: nothing, or some delays.
fn check(config: &Config, lines: Vec<String>) -> anyhow::Result<()> {
    let Some(rule) = config.rule() else {
        return Ok(());
    };
    if let Config::Also(_) = config {
        return Ok(());
    }
    let summary = lines
        .iter()
        .find(|line| line.contains("openat") && line.contains(" injected"))
        .with_context(|| format!("{rule}: no injection summary in {lines:?}"))?;
    let injected: u64 = summary
        .rsplit(": ")
        .next()
        .and_then(|tail| tail.trim_end_matches(" injected").parse().ok())
        .with_context(|| format!("cannot read the count in `{summary}`"))?;
    match config {
        Config::Never(engine) => ensure!(
            injected == 0 && summary.contains(&format!("via {engine}")),
            "{rule}: expected 0 injections via {engine}: {summary}"
        ),
        _ => ensure!(injected > 0, "{rule}: nothing was delayed: {summary}"),
    }
    Ok(())
}

fn report(configs: &[Config], rounds: &[Vec<WrkRun>], duration: Duration, runs: u32) {
    println!();
    println!(
        "wrk -t1 -c8 -d{duration:?} --latency against nginx (one worker) serving a static file, \
         {runs} paired rounds"
    );
    println!(
        "{:<52} {:>12}  {:>9}  {:>9}",
        "configuration", "median req/s", "vs attach", "p99 ms"
    );
    let attach = configs.iter().position(|c| *c == Config::Attach);
    let column = |i: usize, f: fn(&WrkRun) -> f64| -> Vec<f64> {
        rounds.iter().map(|round| f(&round[i])).collect()
    };
    for (i, config) in configs.iter().enumerate() {
        let ratio = attach
            .filter(|&a| a != i && *config != Config::Bare)
            .map(|a| {
                let ratios: Vec<f64> = rounds
                    .iter()
                    .map(|r| r[i].requests_per_sec / r[a].requests_per_sec)
                    .collect();
                format!("{:.3}", median(&ratios))
            })
            .unwrap_or_default();
        println!(
            "{:<52} {:>12.0}  {:>9}  {:>9.3}",
            config.label(),
            median(&column(i, |r| r.requests_per_sec)),
            ratio,
            median(&column(i, |r| r.p99_ms))
        );
    }
    verdicts(configs, rounds, attach);
}

fn verdicts(configs: &[Config], rounds: &[Vec<WrkRun>], attach: Option<usize>) {
    let position = |wanted: Config| configs.iter().position(|c| *c == wanted);
    if let (Some(a), Some(stop)) = (attach, position(Config::Never("stop"))) {
        let ratios: Vec<f64> = rounds
            .iter()
            .map(|r| r[stop].requests_per_sec / r[a].requests_per_sec)
            .collect();
        let kept = median(&ratios);
        let verdict = if kept >= GOAL { "PASS" } else { "MISS" };
        println!(
            "goal: a never-matching rule on the stop engine keeps at least {:.0}% of attach's \
             requests/s: {:.1}% -> {verdict}",
            GOAL * 100.0,
            kept * 100.0
        );
    }
    if let (Some(never), Some(delay)) = (position(Config::Never("stop")), position(Config::Delay)) {
        let shifts: Vec<f64> = rounds
            .iter()
            .map(|r| r[delay].p99_ms - r[never].p99_ms)
            .collect();
        println!(
            "p99 latency shift of 1% of openat delayed {DELAY_MS} ms (vs the never-matching rule, \
             same engine): {:+.3} ms; ideal: +{DELAY_MS:.3} ms (the delayed 1% sit at the p99 \
             boundary; one nginx worker also holds the 7 other connections while it waits)",
            median(&shifts)
        );
    }
}
