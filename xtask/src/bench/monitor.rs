//! `cargo xtask bench monitor`: what counting system calls adds to each call of a process, for
//! chaos-user and for the bpftrace scripts one would write instead, measured in the same run,
//! each as a multiple of the floor: two raw_tp programs that return at once (`floor.rs`).
use std::{path::PathBuf, process::Command, thread, time::Duration};

use anyhow::{Context as _, ensure};

use super::{
    MonitorArgs,
    floor::Floor,
    harness::{self, Daemon, Timing, Tracefs, median},
};
use crate::{build, cgroup::Cgroup};

const DD_ARGS: [&str; 4] = ["if=/dev/zero", "of=/dev/null", "bs=1", "count=1000000"];
/// dd makes one read and one write per byte: 2M system calls.
const DD_BYTES: u64 = 1_000_000;
const DD_SYSCALLS: f64 = 2.0 * DD_BYTES as f64;
/// What each configuration may add, as a multiple of what the floor adds (issue 15).
const GOALS: [(Config, f64); 3] = [
    (Config::ChaosOther, 1.25),
    (Config::ChaosTarget, 3.0),
    (Config::ChaosSampled, 1.75),
];

#[derive(Clone, Copy, PartialEq)]
enum Config {
    Bare,
    Floor,
    /// One empty program on `sys_exit`: the floor of a monitor that counts at exit alone.
    FloorExit,
    ChaosOther,
    ChaosTarget,
    ChaosSampled,
    /// `--no-latency`: counts at `sys_exit` alone.
    ChaosExitOnly,
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
    const ALL: [Config; 9] = [
        Config::Bare,
        Config::Floor,
        Config::FloorExit,
        Config::ChaosOther,
        Config::ChaosTarget,
        Config::ChaosSampled,
        Config::ChaosExitOnly,
        Config::BpftraceCount,
        Config::BpftraceFull,
    ];

    fn label(self) -> &'static str {
        match self {
            Config::Bare => "bare",
            Config::Floor => "floor: 2 empty raw_tp programs",
            Config::FloorExit => "floor at exit: 1 empty raw_tp program",
            Config::ChaosOther => "chaos-user attached to another cgroup",
            Config::ChaosTarget => "chaos-user attached to dd's cgroup",
            Config::ChaosSampled => "  the same, --latency-sample 16",
            Config::ChaosExitOnly => "  the same, --no-latency",
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
        let floor = match config {
            Config::Floor => Some(Floor::attach()?),
            Config::FloorExit => Some(Floor::attach_to(&["sys_exit"])?),
            _ => None,
        };
        let tracer = match config {
            Config::Bare | Config::Floor | Config::FloorExit => None,
            Config::ChaosOther => Some(self.chaos_user(&self.other, &["--quiet"])?),
            Config::ChaosTarget => Some(self.chaos_user(&self.target, &["--quiet"])?),
            Config::ChaosSampled => Some(self.chaos_user(
                &self.target,
                &["--quiet", "--latency-sample", LATENCY_SAMPLE],
            )?),
            Config::ChaosExitOnly => {
                Some(self.chaos_user(&self.target, &["--quiet", "--no-latency"])?)
            }
            Config::BpftraceCount => Some(bpftrace(&bpftrace_count(self.target_id))?),
            Config::BpftraceFull => Some(bpftrace(&bpftrace_full(self.target_id))?),
        };
        let timing = self.dd()?;
        drop(floor);
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

/// Median over the rounds of what `config` adds to dd's CPU time (vs the bare run of the same
/// round), as a multiple of what the floor adds in that round. Each round's runs are seconds
/// apart: the machine's drift cancels out, which it does not between medians of whole columns.
fn multiple(runs: &[Vec<Run>], config: Config) -> f64 {
    let cpu = |config: Config, round: usize| runs[config as usize][round].timing.cpu.as_secs_f64();
    let ratios: Vec<f64> = (0..runs[0].len())
        .map(|round| {
            let bare = cpu(Config::Bare, round);
            (cpu(config, round) - bare) / (cpu(Config::Floor, round) - bare)
        })
        .collect();
    median(&ratios)
}

fn report(runs: &[Vec<Run>], dd_cpu: usize) {
    // Medians of the undisturbed runs, when there are some.
    let kept = |runs: &[Run]| -> Vec<f64> {
        let clean: Vec<f64> = runs
            .iter()
            .filter(|r| !r.disturbed)
            .map(|r| r.timing.cpu.as_secs_f64())
            .collect();
        if clean.is_empty() {
            runs.iter().map(|r| r.timing.cpu.as_secs_f64()).collect()
        } else {
            clean
        }
    };
    let medians: Vec<f64> = runs.iter().map(|runs| median(&kept(runs))).collect();
    // Config::ALL lists every config, in the order `medians` holds them.
    let added_ns = |config: Config| (medians[config as usize] - medians[0]) / DD_SYSCALLS * 1e9;
    println!();
    println!(
        "dd {} in its own cgroup, on CPU {dd_cpu}: {DD_SYSCALLS} syscalls, {} rounds",
        DD_ARGS.join(" "),
        runs[0].len()
    );
    println!(
        "cpu = dd's user+sys time (the programs run inside its syscalls; waiting for a CPU does not count)"
    );
    println!(
        "x floor = added cpu / the floor's added cpu, median of the rounds' ratios (paired runs)"
    );
    println!(
        "{:<38} {:>7} {:>14} {:>8}   cpu s of each run",
        "configuration", "cpu s", "added ns/call", "x floor"
    );
    for (config, own) in Config::ALL.iter().zip(runs) {
        let (added, times) = match config {
            Config::Bare => ("-".to_owned(), "-".to_owned()),
            _ => (
                format!("{:+.0}", added_ns(*config)),
                format!("{:.2}", multiple(runs, *config)),
            ),
        };
        let each: Vec<String> = own
            .iter()
            .map(|r| {
                let mark = if r.disturbed { "*" } else { "" };
                format!("{:.3}{mark}", r.timing.cpu.as_secs_f64())
            })
            .collect();
        println!(
            "{:<38} {:>7.3} {added:>14} {times:>8}   {}",
            config.label(),
            medians[*config as usize],
            each.join(" ")
        );
    }
    if runs.iter().flatten().any(|r| r.disturbed) {
        println!(
            "* another chaos-user or bpftrace was running: left out of the cpu median when possible"
        );
    }
    println!();
    for (config, limit) in GOALS {
        let times = multiple(runs, config);
        let verdict = if times <= limit { "PASS" } else { "MISS" };
        println!(
            "goal: {:<38} at most {limit:.2}x the floor: {times:.2}x -> {verdict}",
            config.label().trim()
        );
    }
}
