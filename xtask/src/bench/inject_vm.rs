//! The kprobe (and fmod-ret) part of `cargo xtask bench inject`: this host kernel has neither, so
//! the override VM runs the same configurations (`bench-kprobe` in tests/src/bin/chaos-vm-init/)
//! and prints one `vm-bench CONFIG CALL CALLS CPU_NS WALL_NS` line per run; this makes the table.
use std::{path::Path, time::Duration};

use anyhow::{Context as _, ensure};

use super::{
    harness::median,
    inject::{PerCall, print_goals},
};
use crate::vm;

/// Names the VM prints, in the order of the host part's `Config::ALL`, with labels.
const CONFIGS: [(&str, &str); 5] = [
    ("bare", "bare"),
    ("monitor", "chaos-user attach (monitor only)"),
    ("one-rule", "chaos-user inject --engine kprobe, 1 rule"),
    ("thousand-rules", "  the same, 1000 rules/250 targets"),
    ("strace", "strace -f -e inject=openat"),
];
/// Printed beside them, outside the goals (which are the kprobe engine's).
const FMOD_RET: (&str, &str) = (
    "fmod-ret-rule",
    "chaos-user inject --engine fmod-ret, 1 rule",
);
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
    println!("kprobe and fmod-ret engines, in the override VM (QEMU TCG, 2 vCPUs): booting...");
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
        table.push([getppid, openat]);
    }
    let (name, label) = FMOD_RET;
    let (getppid, openat) = (per_call(name, CALLS[0])?, per_call(name, CALLS[1])?);
    println!(
        "{label:<42} {:>12.0} {:>12.0} {:>12.0} {:>12.0}",
        getppid.0, getppid.1, openat.0, openat.1
    );
    let per_call: [PerCall; 5] = table
        .try_into()
        .map_err(|_| anyhow::anyhow!("one row per configuration"))?;
    print_goals("openat", per_call);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_vm_lines() {
        let sample = parse("vm-bench one-rule getppid 100000 150000000 170000000").unwrap();
        assert_eq!(
            (sample.config.as_str(), sample.call.as_str()),
            ("one-rule", "getppid")
        );
        assert_eq!(sample.cpu_ns / sample.calls, 1500.0);
        assert_eq!(sample.wall_ns / sample.calls, 1700.0);
        assert!(parse("vm-bench one-rule getppid 100000").is_err());
        assert!(parse("vm-bench one-rule getppid many 1 2").is_err());
    }
}
