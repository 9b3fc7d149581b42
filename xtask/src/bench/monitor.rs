//! `cargo xtask bench monitor`: what counting system calls adds to each call of a process, for
//! chaos-user and for the bpftrace scripts one would write instead, measured in the same run.
use std::{path::PathBuf, process::Command, thread, time::Duration};

use anyhow::{Context as _, ensure};

use super::{
    MonitorArgs,
    harness::{self, Daemon, Timing, Tracefs, median},
};
use crate::{build, cgroup::Cgroup};

const DD_ARGS: [&str; 4] = ["if=/dev/zero", "of=/dev/null", "bs=1", "count=1000000"];
/// dd makes one read and one write per byte: 2M system calls.
const DD_BYTES: u64 = 1_000_000;
const DD_SYSCALLS: f64 = 2.0 * DD_BYTES as f64;
/// chaos-user may add at most this fraction of what bpftrace count+errno+latency adds.
const GOAL: f64 = 1.0 / 3.0;

#[derive(Clone, Copy, PartialEq)]
enum Config {
    Bare,
    ChaosOther,
    ChaosTarget,
    ChaosSampled,
    BpftraceCount,
    BpftraceFull,
}

// `config as usize` indexes the per-config results: ALL lists them in declaration order.
const _: () = {
    let mut i = 0;
    while i < Config::ALL.len() {
        assert!(Config::ALL[i] as usize == i);
        i += 1;
    }
};

/// `--latency-sample` of the sampled configuration.
const LATENCY_SAMPLE: &str = "16";

impl Config {
    const ALL: [Config; 6] = [
        Config::Bare,
        Config::ChaosOther,
        Config::ChaosTarget,
        Config::ChaosSampled,
        Config::BpftraceCount,
        Config::BpftraceFull,
    ];

    fn label(self) -> &'static str {
        match self {
            Config::Bare => "bare",
            Config::ChaosOther => "chaos-user attached to another cgroup",
            Config::ChaosTarget => "chaos-user attached to dd's cgroup",
            Config::ChaosSampled => "  the same, --latency-sample 16",
            Config::BpftraceCount => "bpftrace count",
            Config::BpftraceFull => "bpftrace count+errno+latency",
        }
    }
}

/// Count per syscall id, in the kernel, for dd's cgroup only.
fn bpftrace_count(cgroup: u64) -> String {
    format!(
        "tracepoint:raw_syscalls:sys_enter /cgroup == {cgroup}/ {{ @calls[args->id] = count(); }}"
    )
}

/// What chaos-user keeps: calls, failures by errno and a latency histogram per syscall.
fn bpftrace_full(cgroup: u64) -> String {
    format!(
        "tracepoint:raw_syscalls:sys_enter /cgroup == {cgroup}/ {{ @start[tid] = nsecs; }}
        tracepoint:raw_syscalls:sys_exit /cgroup == {cgroup} && @start[tid]/ {{
            @calls[args->id] = count();
            if (args->ret < 0) {{ @errors[args->id, -args->ret] = count(); }}
            @latency_ns[args->id] = hist(nsecs - @start[tid]);
            delete(@start[tid]);
        }}"
    )
}

struct Bench {
    chaos_user: PathBuf,
    /// dd runs here.
    target: Cgroup,
    target_id: u64,
    /// Empty: chaos-user attached here runs its programs for dd's calls without counting them.
    other: Cgroup,
    /// Where dd runs. Not CPU 0: bpftrace opens its tracepoint perf event on CPU 0 only, and
    /// calls made there cost it more; elsewhere is what most processes of a big host see, and
    /// a fixed CPU keeps the comparison from depending on where the scheduler puts dd.
    cpu: usize,
}

impl Bench {
    fn dd(&self) -> anyhow::Result<Timing> {
        let mut dd = Command::new("dd");
        dd.args(DD_ARGS);
        // dd moves itself into the cgroup before exec: all its calls, and only its, are there.
        self.target.place(&mut dd)?;
        harness::pin(&mut dd, self.cpu);
        harness::time(&mut dd)
    }

    /// One timed dd run under `config`, its tracer attached before dd starts.
    fn measure(&self, config: Config) -> anyhow::Result<Timing> {
        let tracer = match config {
            Config::Bare => None,
            Config::ChaosOther => Some(self.chaos_user(&self.other, &["--quiet"])?),
            Config::ChaosTarget => Some(self.chaos_user(&self.target, &["--quiet"])?),
            Config::ChaosSampled => Some(self.chaos_user(
                &self.target,
                &["--quiet", "--latency-sample", LATENCY_SAMPLE],
            )?),
            Config::BpftraceCount => Some(bpftrace(&bpftrace_count(self.target_id))?),
            Config::BpftraceFull => Some(bpftrace(&bpftrace_full(self.target_id))?),
        };
        let timing = self.dd()?;
        let output = match tracer {
            Some(tracer) => tracer.stop()?,
            None => Vec::new(),
        };
        if matches!(config, Config::BpftraceCount | Config::BpftraceFull) {
            // A cgroup filter that never matches would be cheap and wrong: dd's 1000000 reads
            // and writes must show up in the `@calls[ID]: N` lines bpftrace prints on exit.
            let counted = output.iter().filter(|l| bpftrace_calls(l) >= DD_BYTES);
            ensure!(
                counted.count() >= 2,
                "bpftrace did not count dd's reads and writes: {}",
                output.join("\n")
            );
        }
        Ok(timing)
    }

    fn chaos_user(&self, cgroup: &Cgroup, output: &[&str]) -> anyhow::Result<Daemon> {
        harness::attach_cgroup(&self.chaos_user, &cgroup.path, output)
    }

    /// A timed run is only worth something if chaos-user really counts dd: check its JSON.
    fn check_counts(&self) -> anyhow::Result<()> {
        let mut chaos = self.chaos_user(&self.target, &["--json", "--interval", "200ms"])?;
        self.dd()?;
        // Snapshots come on a timer: wait for one taken after dd's last call.
        let line = chaos
            .wait_for(
                |line| {
                    calls_total(line, "read") >= DD_BYTES && calls_total(line, "write") >= DD_BYTES
                },
                Duration::from_secs(10),
            )
            .context("chaos-user did not count dd's 1000000 reads and writes")?;
        chaos.stop()?;
        eprintln!(
            "check: chaos-user counted dd's read {} and write {} calls",
            calls_total(&line, "read"),
            calls_total(&line, "write")
        );
        Ok(())
    }
}

fn bpftrace(script: &str) -> anyhow::Result<Daemon> {
    let mut daemon = Daemon::spawn("bpftrace", Command::new("bpftrace").args(["-e", script]))?;
    daemon.wait_for(
        |line| line.starts_with("Attaching"),
        Duration::from_secs(60),
    )?;
    // bpftrace prints "Attaching N probes..." before it attaches them.
    thread::sleep(Duration::from_secs(1));
    Ok(daemon)
}

/// N in bpftrace's `@calls[ID]: N` lines, 0 in any other line.
fn bpftrace_calls(line: &str) -> u64 {
    line.strip_prefix("@calls[")
        .and_then(|rest| rest.split_once("]: "))
        .and_then(|(_, count)| count.parse().ok())
        .unwrap_or(0)
}

/// `calls_total` of `syscall` in a `chaos-user attach --json` line, 0 if it is not there.
/// serde writes a struct's fields in order, and `calls_total` follows `syscall`.
fn calls_total(line: &str, syscall: &str) -> u64 {
    let key = format!(r#""syscall":"{syscall}","calls_total":"#);
    let Some(at) = line.find(&key) else { return 0 };
    let digits = &line[at + key.len()..];
    let end = digits
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(digits.len());
    digits[..end].parse().unwrap_or(0)
}

/// One timed dd run.
#[derive(Clone, Copy)]
struct Run {
    timing: Timing,
    /// Another chaos-user or bpftrace ran around it: its programs ran for dd's calls too.
    disturbed: bool,
}

pub fn run(args: &MonitorArgs) -> anyhow::Result<()> {
    let chaos_user = build::chaos_user()?;
    let _tracefs = Tracefs::ensure()?;
    let target = Cgroup::create("syschaos-bench")?;
    let bench = Bench {
        chaos_user,
        target_id: target.id()?,
        target,
        other: Cgroup::create("syschaos-bench-other")?,
        cpu: harness::last_cpu()?,
    };
    eprintln!("bench: load average {}", harness::load_average());
    bench.check_counts()?;

    // Round-robin, so that a burst of load elsewhere hits one round of every config, not
    // every run of one config; the median then drops it.
    let mut runs: Vec<Vec<Run>> = vec![Vec::new(); Config::ALL.len()];
    for round in 1..=args.runs {
        for (config, runs) in Config::ALL.iter().zip(&mut runs) {
            let before = harness::other_tracers();
            let timing = bench
                .measure(*config)
                .with_context(|| format!("configuration \"{}\"", config.label()))?;
            let mut others = [before, harness::other_tracers()].concat();
            others.sort();
            others.dedup();
            eprintln!(
                "run {round}/{}: {:<38} cpu {:.3} s  wall {:.3} s{}",
                args.runs,
                config.label(),
                timing.cpu.as_secs_f64(),
                timing.wall.as_secs_f64(),
                if others.is_empty() {
                    String::new()
                } else {
                    format!("  (disturbed: {} running)", others.join(", "))
                }
            );
            runs.push(Run {
                timing,
                disturbed: !others.is_empty(),
            });
        }
    }
    eprintln!("bench: load average {}", harness::load_average());
    report(&runs, bench.cpu);
    Ok(())
}

#[expect(
    clippy::too_many_lines,
    reason = "the printed report, line by line, in the order it reads"
)]
fn report(runs: &[Vec<Run>], dd_cpu: usize) {
    // Medians of the undisturbed runs, when there are some.
    let kept = |runs: &[Run]| -> Vec<Timing> {
        let clean: Vec<Timing> = runs
            .iter()
            .filter(|r| !r.disturbed)
            .map(|r| r.timing)
            .collect();
        if clean.is_empty() {
            runs.iter().map(|r| r.timing).collect()
        } else {
            clean
        }
    };
    let medians: Vec<(f64, f64)> = runs
        .iter()
        .map(|runs| {
            let kept = kept(runs);
            let cpu: Vec<f64> = kept.iter().map(|t| t.cpu.as_secs_f64()).collect();
            let wall: Vec<f64> = kept.iter().map(|t| t.wall.as_secs_f64()).collect();
            (median(&cpu), median(&wall))
        })
        .collect();
    // Config::ALL lists every config, in the order `medians` holds them.
    let added_ns = |config: Config| (medians[config as usize].0 - medians[0].0) / DD_SYSCALLS * 1e9;
    println!();
    println!(
        "dd {} in its own cgroup, on CPU {dd_cpu}: {DD_SYSCALLS} syscalls, median of {} runs",
        DD_ARGS.join(" "),
        runs[0].len()
    );
    println!(
        "cpu = dd's user+sys time (the programs run inside its syscalls; waiting for a CPU does not count)"
    );
    println!(
        "{:<38} {:>7} {:>7} {:>14}   cpu s of each run",
        "configuration", "cpu s", "wall s", "added ns/call"
    );
    for ((config, runs), (cpu, wall)) in Config::ALL.iter().zip(runs).zip(&medians) {
        let added = match config {
            Config::Bare => "-".to_owned(),
            _ => format!("{:+.0}", added_ns(*config)),
        };
        let each: Vec<String> = runs
            .iter()
            .map(|r| {
                let mark = if r.disturbed { "*" } else { "" };
                format!("{:.3}{mark}", r.timing.cpu.as_secs_f64())
            })
            .collect();
        println!(
            "{:<38} {cpu:>7.3} {wall:>7.3} {added:>14}   {}",
            config.label(),
            each.join(" ")
        );
    }
    if runs.iter().flatten().any(|r| r.disturbed) {
        println!(
            "* another chaos-user or bpftrace was running: left out of the median when possible"
        );
    }
    println!();

    let non_target = added_ns(Config::ChaosOther);
    let target = added_ns(Config::ChaosTarget);
    println!(
        "breakdown: chaos-user costs every non-target process {non_target:.0} ns/call \
         (2 program runs, cgroup id, target filter); counting a target adds {:.0} ns/call \
         (in-flight and stats map updates, 2 clock reads)",
        target - non_target
    );
    let full = added_ns(Config::BpftraceFull);
    let verdict = |added: f64| {
        let ratio = added / full;
        let verdict = if full > 0.0 && ratio <= GOAL {
            "PASS"
        } else {
            "MISS"
        };
        format!("{added:.0} / {full:.0} ns = {ratio:.3} (limit {GOAL:.3}) -> {verdict}")
    };
    println!("goal: chaos-user's added cost <= 1/3 of bpftrace count+errno+latency's added cost:");
    println!(
        "  every call timed (as bpftrace does):  {}",
        verdict(target)
    );
    println!(
        "  one call in {LATENCY_SAMPLE} timed (counts and errors exact): {}",
        verdict(added_ns(Config::ChaosSampled))
    );
}
