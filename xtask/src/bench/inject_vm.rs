//! The kprobe part of `cargo xtask bench inject`: this host kernel has no kprobes, so the
//! override VM runs the same configurations (`bench-kprobe` in tests/src/bin/chaos-vm-init/)
//! and prints one `vm-bench CONFIG CALL CALLS CPU_NS WALL_NS` line per run; this makes the table.
use std::{path::Path, time::Duration};

use anyhow::{Context as _, ensure};

use super::harness::median;
use crate::vm;

/// Names the VM prints, in table order, with the host part's labels.
const CONFIGS: [(&str, &str); 5] = [
    ("bare", "bare"),
    ("monitor", "chaos-user attach (monitor only)"),
    ("one-rule", "chaos-user inject --engine kprobe, 1 rule"),
    ("thousand-rules", "  the same, 1000 rules/250 targets"),
    ("strace", "strace -f -e inject=openat"),
];
const CALLS: [&str; 2] = ["getppid", "open-missing"];

/// Boot, run, verify, time: minutes under TCG.
const TIMEOUT: Duration = Duration::from_secs(1200);

struct Sample {
    config: String,
    call: String,
    calls: f64,
    cpu_ns: f64,
    wall_ns: f64,
}

pub fn run() -> anyhow::Result<()> {
    let strace = which("strace")?;
    println!();
    println!("kprobe engine, in the override VM (QEMU TCG, 2 vCPUs): booting...");
    let lines = vm::run_bench("override", "bench-kprobe", &[&strace], TIMEOUT)?;
    let samples: Vec<Sample> = lines.iter().map(|l| parse(l)).collect::<Result<_, _>>()?;
    ensure!(!samples.is_empty(), "the VM printed no vm-bench line");
    report(&samples)
}

fn which(program: &str) -> anyhow::Result<std::path::PathBuf> {
    let output = std::process::Command::new("which").arg(program).output()?;
    let path = String::from_utf8_lossy(&output.stdout).trim().to_owned();
    ensure!(
        output.status.success() && Path::new(&path).is_file(),
        "{program} not found: apt-get install {program}"
    );
    Ok(path.into())
}

/// `vm-bench one-rule getppid 100000 123456 234567`
fn parse(line: &str) -> anyhow::Result<Sample> {
    let words: Vec<&str> = line.split_whitespace().collect();
    let [_, config, call, calls, cpu, wall] = words[..] else {
        anyhow::bail!("malformed line from the VM: {line}");
    };
    let number = |w: &str| w.parse::<f64>().with_context(|| format!("in {line}"));
    Ok(Sample {
        config: config.to_owned(),
        call: call.to_owned(),
        calls: number(calls)?,
        cpu_ns: number(cpu)?,
        wall_ns: number(wall)?,
    })
}

fn report(samples: &[Sample]) -> anyhow::Result<()> {
    // Median cpu and wall ns per call of (config, call).
    let per_call = |config: &str, call: &str| -> anyhow::Result<(f64, f64)> {
        let runs: Vec<&Sample> = samples
            .iter()
            .filter(|s| s.config == config && s.call == call)
            .collect();
        ensure!(!runs.is_empty(), "no {config} {call} run from the VM");
        let cpu: Vec<f64> = runs.iter().map(|s| s.cpu_ns / s.calls).collect();
        let wall: Vec<f64> = runs.iter().map(|s| s.wall_ns / s.calls).collect();
        Ok((median(&cpu), median(&wall)))
    };
    let runs = samples.iter().filter(|s| s.config == "bare").count() / CALLS.len();
    println!(
        "chaos-workload calls in its own cgroup: getppid (no rule matches) and openat of a \
         missing file (injected configs fail it with EACCES, the others see ENOENT), median of \
         {runs} runs; TCG emulates the CPU: compare ratios, not the ns"
    );
    println!(
        "{:<42} {:>12} {:>12} {:>12} {:>12}",
        "configuration", "getppid cpu", "getppid wall", "openat cpu", "openat wall"
    );
    let mut table = Vec::new();
    for (name, label) in CONFIGS {
        let getppid = per_call(name, CALLS[0])?;
        let openat = per_call(name, CALLS[1])?;
        println!(
            "{label:<42} {:>12.0} {:>12.0} {:>12.0} {:>12.0}",
            getppid.0, getppid.1, openat.0, openat.1
        );
        table.push((getppid, openat));
    }
    let [bare, monitor, one, thousand, strace] = table[..] else {
        unreachable!("one row per config");
    };
    println!("goal: the non-matching path (getppid, cpu ns/call) costs no more than the monitor:");
    for (label, cost) in [("1 rule", one.0.0), ("1000 rules", thousand.0.0)] {
        println!(
            "  {label:<10} {cost:.0} ns vs monitor {:.0} ns (bare {:.0}): added {:+.0} ns over \
             the monitor, ratio {:.3}",
            monitor.0.0,
            bare.0.0,
            cost - monitor.0.0,
            cost / monitor.0.0
        );
    }
    println!("goal: 1000 rules cost the same per call as one (1000 rules / 1 rule, cpu):");
    println!(
        "  getppid {:.3}, injected openat {:.3}",
        thousand.0.0 / one.0.0,
        thousand.1.0 / one.1.0
    );
    println!("injected openat, chaos-user kprobe / strace -e inject:");
    for (label, one, thousand, strace) in [
        ("cpu", one.1.0, thousand.1.0, strace.1.0),
        ("wall", one.1.1, thousand.1.1, strace.1.1),
    ] {
        println!(
            "  {label:<4} 1 rule {one:.0} / {strace:.0} ns = {:.3}; 1000 rules {thousand:.0} / \
             {strace:.0} ns = {:.3}",
            one / strace,
            thousand / strace
        );
    }
    Ok(())
}
