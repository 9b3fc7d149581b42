//! `bench-kprobe`: what the kprobe engine adds to each call, measured inside the override VM for
//! `cargo xtask bench inject` (this host kernel has no kprobes). The same configurations as the
//! host's part: bare, monitor only, 1 rule, 1000 rules over 250 targets, strace -e inject; and
//! the fmod-ret engine's 1 rule (refused on this host too).
//!
//! Prints one `vm-bench CONFIG CALL CALLS CPU_NS WALL_NS` line per run; xtask makes the table.
//! Fails if an injecting configuration did not fail every openat with EACCES, or another one
//! did: a timing of the wrong thing is worth nothing. TCG emulates the CPU, so only ratios
//! between configurations of this run mean something.
use std::{
    io::Read as _,
    path::{Path, PathBuf},
    process::Stdio,
    time::{Duration, Instant},
};

use crate::{
    helpers::{ChaosUser, Outcome, WORKLOAD, create_dir, spawn_in_cgroup, workload},
    json,
};

const ROUNDS: u32 = 3;
/// Calls per run: no rule matches getppid; the rules fail every openat (of a missing file).
const GETPPID: u64 = 100_000;
const OPENAT: u64 = 10_000;
const TARGETS: usize = 250;
const RULE: &str = "openat=EACCES";
/// The other rules of each target in the 1000-rule configuration: calls the workload never makes.
const OTHER_RULES: [&str; 3] = ["unlink=EPERM", "mkdir=EPERM", "rmdir=EPERM"];
const STRACE: &str = "/usr/bin/strace";

#[derive(Clone, Copy, PartialEq)]
enum Config {
    Bare,
    Monitor,
    OneRule,
    /// The same rule on the fmod-ret engine.
    FmodRetRule,
    ThousandRules,
    Strace,
}

impl Config {
    const ALL: [Config; 6] = [
        Config::Bare,
        Config::Monitor,
        Config::OneRule,
        Config::FmodRetRule,
        Config::ThousandRules,
        Config::Strace,
    ];

    /// The name xtask reads back.
    fn name(self) -> &'static str {
        match self {
            Config::Bare => "bare",
            Config::Monitor => "monitor",
            Config::OneRule => "one-rule",
            Config::FmodRetRule => "fmod-ret-rule",
            Config::ThousandRules => "thousand-rules",
            Config::Strace => "strace",
        }
    }

    fn injects(self) -> bool {
        matches!(
            self,
            Config::OneRule | Config::FmodRetRule | Config::ThousandRules | Config::Strace
        )
    }
}

pub fn bench_kprobe() -> Result<(), String> {
    let target = PathBuf::from("/sys/fs/cgroup/bench-target");
    create_dir(&target)?;
    let others: Vec<PathBuf> = (1..TARGETS)
        .map(|i| PathBuf::from(format!("/sys/fs/cgroup/bench-other-{i}")))
        .collect();
    for other in &others {
        create_dir(other)?;
    }
    if !Path::new(STRACE).exists() {
        return Err(format!("{STRACE} is not in the initramfs"));
    }
    for round in 1..=ROUNDS {
        for config in Config::ALL {
            let _tracer = tracer(config, &target, &others)?;
            for (call, calls) in [("getppid", GETPPID), ("open-missing", OPENAT)] {
                let run = run_workload(config, &target, call, calls)?;
                check(config, call, calls, &run.report)?;
                println!(
                    "vm-bench {} {call} {calls} {} {}",
                    config.name(),
                    run.cpu.as_nanos(),
                    run.wall.as_nanos()
                );
            }
            println!("  round {round}: {} done", config.name());
        }
    }
    Ok(())
}

/// chaos-user for `config`, attached; stopped (SIGKILL: nothing to read) when dropped.
fn tracer(config: Config, target: &Path, others: &[PathBuf]) -> Result<Option<ChaosUser>, String> {
    let (subcommand, rules, targets) = match config {
        Config::Bare | Config::Strace => return Ok(None),
        Config::Monitor => ("attach", vec![], 1),
        Config::OneRule | Config::FmodRetRule => ("inject", vec![RULE], 1),
        Config::ThousandRules => ("inject", [&[RULE][..], &OTHER_RULES].concat(), TARGETS),
    };
    let mut args = vec![subcommand, "--quiet", "--no-metrics"];
    match config {
        Config::FmodRetRule => args.extend(["--engine", "fmod-ret"]),
        _ if subcommand == "inject" => args.extend(["--engine", "kprobe"]),
        _ => {}
    }
    let cgroups = std::iter::once(target).chain(others.iter().map(PathBuf::as_path));
    for cgroup in cgroups.take(targets) {
        args.extend([
            "--cgroup",
            cgroup.to_str().ok_or("cgroup path is not UTF-8")?,
        ]);
    }
    for rule in rules {
        args.extend(["--rule", rule]);
    }
    let mut chaos_user = ChaosUser::start(&args)?;
    // TCG is slow and the verifier runs in it, once per program and target.
    chaos_user.wait_attached(Duration::from_secs(120))?;
    Ok(Some(chaos_user))
}

struct Run {
    report: json::Value,
    /// User + system time of the process and its waited-for children (strace's tracee).
    cpu: Duration,
    wall: Duration,
}

fn run_workload(config: Config, target: &Path, call: &str, calls: u64) -> Result<Run, String> {
    let calls = calls.to_string();
    let workload_args = ["calls", &format!("--{call}"), &calls];
    let mut command = if config == Config::Strace {
        let mut strace = std::process::Command::new(STRACE);
        // As on the host: only openat traced, printed to /dev/null.
        strace.args(["-f", "-o", "/dev/null", "-e", "trace=openat"]);
        strace.args(["-e", "inject=openat:error=EACCES", WORKLOAD]);
        strace.args(workload_args);
        strace
    } else {
        workload(&workload_args)
    };
    command.stdout(Stdio::piped());
    let started = Instant::now();
    let mut child = spawn_in_cgroup(command, target).map_err(|e| format!("workload: {e}"))?;
    let mut text = String::new();
    if let Some(mut stdout) = child.stdout.take() {
        stdout
            .read_to_string(&mut text)
            .map_err(|e| format!("workload's report: {e}"))?;
    }
    let mut status = 0;
    // SAFETY: rusage is plain data that wait4 fills in; the child is ours and not yet reaped.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let pid = child.id() as libc::pid_t;
    if unsafe { libc::wait4(pid, &mut status, 0, &mut usage) } != pid {
        return Err(format!("wait4: {}", std::io::Error::last_os_error()));
    }
    let wall = started.elapsed();
    if !libc::WIFEXITED(status) || libc::WEXITSTATUS(status) != 0 {
        return Err(format!(
            "{} workload exited with status {status}: {text}",
            config.name()
        ));
    }
    let time = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    Ok(Run {
        report: json::parse(text.trim()).map_err(|e| format!("bad report ({e}): {text}"))?,
        cpu: time(usage.ru_utime) + time(usage.ru_stime),
        wall,
    })
}

/// Every openat fails with EACCES under an injecting configuration, with ENOENT (the file is
/// missing) otherwise; getppid never fails.
fn check(config: Config, call: &str, calls: u64, report: &json::Value) -> Result<(), String> {
    let outcome = Outcome::of(report, call)?;
    let (failed, errno) = match call {
        "getppid" => (0, None),
        _ if config.injects() => (calls, Some(libc::EACCES)),
        _ => (calls, Some(libc::ENOENT)),
    };
    let errnos_ok = match errno {
        None => outcome.errnos.is_empty(),
        Some(errno) => outcome.errnos == [(errno.to_string(), calls)],
    };
    if outcome.calls != calls || outcome.failed != failed || !errnos_ok {
        return Err(format!(
            "{} {call}: {outcome}; expected {calls} calls, {failed} failed{}",
            config.name(),
            errno.map_or(String::new(), |e| format!(" with errno {e}"))
        ));
    }
    Ok(())
}
