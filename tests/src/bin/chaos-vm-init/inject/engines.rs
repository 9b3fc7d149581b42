//! The engines on whatever kernel the VM boots.
//!
//! - `doctor`: what `doctor --json` says of this kernel is what the kernel table of
//!   `xtask/src/vm.rs` expects, given as `syschaos.engines=kprobe:bpf_override_return,lsm:ok,...`
//!   (`ok`: the engine works; otherwise a word its reason must contain); the monitor works.
//! - `inject-cgroup-sock`, `inject-signal`, `inject-ptrace`, `inject-stop`: those engines, each named in its
//!   rules, with exact errnos and counts, the neighbour untouched, nothing left after exit.
//! - `engines-refused`: each engine doctor reports unavailable is refused up front, with doctor's
//!   reason, and leaves nothing behind.
use std::{os::unix::process::ExitStatusExt as _, path::Path, process::Stdio, time::Duration};

use super::{
    NEIGHBOUR, all_of, check_engines, doctor_engines, doctor_report, expect_refusal,
    phase::{Expect, Phase, after_round, fault, no_programs_left, run_phase},
    prepare_inject,
};
use crate::{
    cmdline_param,
    helpers::{ChaosUser, ChaosUserOutput, Workload, spawn_in_cgroup, workload},
    json,
};

/// How long the ptrace phases' workloads wait before their calls (the tracer's scan, in TCG).
pub(super) const PTRACE_WAIT_MS: u64 = 1500;

pub fn doctor() -> Result<(), String> {
    let expected = cmdline_param("syschaos.engines")
        .ok_or("no syschaos.engines= on the kernel command line (xtask's kernel table)")?;
    let expected: Vec<(&str, Result<(), &str>)> = expected
        .split(',')
        .map(|item| match item.split_once(':') {
            None | Some((_, "ok")) => (engine_of(item), Ok(())),
            Some((engine, needle)) => (engine, Err(needle)),
        })
        .collect();
    let report = doctor_report()?;
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let field = |name: &str, result: &str| report.get(name).and_then(|r| r.get(result)).cloned();
    if report.get("kernel").and_then(json::Value::as_str) != Some(release.trim()) {
        return Err(format!(
            "doctor's kernel is not {}: {:?}",
            release.trim(),
            report.get("kernel")
        ));
    }
    if field("monitor", "Ok").is_none() {
        return Err(format!(
            "doctor says the monitor does not work: {:?}",
            field("monitor", "Err")
        ));
    }
    if field("cgroup_v2_root", "Ok") != Some(json::Value::String("/sys/fs/cgroup".into())) {
        return Err(format!(
            "doctor's cgroup v2 root should be /sys/fs/cgroup: {:?}",
            report.get("cgroup_v2_root")
        ));
    }
    let reported: Vec<String> = doctor_engines(&report)
        .into_iter()
        .map(|(e, _)| e)
        .collect();
    let listed: Vec<&str> = expected.iter().map(|(engine, _)| *engine).collect();
    if reported != listed {
        return Err(format!(
            "doctor reports the engines {reported:?}, the kernel table lists {listed:?}"
        ));
    }
    check_engines(&report, &expected)
}

/// `ENGINE` of `ENGINE:ok`.
fn engine_of(item: &str) -> &str {
    item.split_once(':').map_or(item, |(engine, _)| engine)
}

pub fn inject_cgroup_sock() -> Result<(), String> {
    let target = prepare_inject("inject-cgroup-sock")?;
    let faults = [fault("connect", libc::ECONNREFUSED, "ECONNREFUSED")];
    let phase = |limit: &str, expect| Phase::rules(&faults, limit, expect);
    all_of([
        run_phase(
            &target,
            &phase("count=3,engine=cgroup-sock", Expect::At(&[1, 2, 3])),
            "cgroup-sock",
        ),
        run_phase(
            &target,
            &phase("nth=4,engine=cgroup-sock", Expect::At(&[4])),
            "cgroup-sock",
        ),
    ])
}

pub fn inject_ptrace() -> Result<(), String> {
    tracer_phases("inject-ptrace", "ptrace")
}

/// The stop engine: decided in the kernel (5.12+, as every in-kernel engine), carried out by the
/// same tracer, on the same calls and counts as ptrace.
pub fn inject_stop() -> Result<(), String> {
    tracer_phases("inject-stop", "stop")
}

/// getppid, openat and fsync errnos by a tracer engine: count=3, then nth=4.
fn tracer_phases(test: &str, engine: &str) -> Result<(), String> {
    let target = prepare_inject(test)?;
    let faults = [
        fault("getppid", libc::EPERM, "EPERM"),
        fault("openat", libc::EACCES, "EACCES"),
        fault("fsync", libc::EIO, "EIO"),
    ];
    let phase = |limit: &str, expect| Phase::rules(&faults, limit, expect).waiting(PTRACE_WAIT_MS);
    all_of([
        run_phase(
            &target,
            &phase(&format!("count=3,engine={engine}"), Expect::At(&[1, 2, 3])),
            engine,
        ),
        run_phase(
            &target,
            &phase(&format!("nth=4,engine={engine}"), Expect::At(&[4])),
            engine,
        ),
    ])
}

/// SIGKILL at the 5th getppid: the target dies there, having made 5; the neighbour makes its 10.
pub fn inject_signal() -> Result<(), String> {
    let target = prepare_inject("inject-signal")?;
    let label = target.to_str().ok_or("cgroup path is not UTF-8")?;
    let mut chaos_user = ChaosUser::on_cgroup(
        "inject",
        label,
        "60s",
        &["--syscall", "getppid", "--signal", "SIGKILL", "--nth", "5"],
    )?;
    chaos_user.wait_attached(Duration::from_secs(60))?;
    let mut victim = workload(&["calls", "--getppid", "10"]);
    victim.stdout(Stdio::piped());
    let victim =
        spawn_in_cgroup(victim, &target).map_err(|e| format!("starting the target: {e}"))?;
    let args = ["calls", "--getppid", "10"].map(str::to_owned);
    let neighbour = Workload::start(&args, Path::new(NEIGHBOUR))?;
    let victim = victim
        .wait_with_output()
        .map_err(|e| format!("waiting for the target: {e}"))?;
    let neighbour = neighbour.report()?;
    std::thread::sleep(Duration::from_millis(1500));
    chaos_user.interrupt()?;
    let output = chaos_user.finish(Duration::from_secs(60))?;
    if victim.status.signal() != Some(libc::SIGKILL) || !victim.stdout.is_empty() {
        return Err(format!(
            "the target should die of SIGKILL before its report: {}, stdout {:?}",
            victim.status,
            String::from_utf8_lossy(&victim.stdout)
        ));
    }
    let outcome = crate::helpers::Outcome::of(&neighbour, "getppid")?;
    if outcome.calls != 10 || outcome.failed != 0 {
        return Err(format!(
            "the neighbour's getppid: {outcome}, expected 10 calls"
        ));
    }
    check_signal_counts(&output, label)?;
    after_round(&target, &[fault("getppid", libc::EPERM, "EPERM")])
}

/// chaos-user counted 5 getppid of the target (the 5th completes; the signal comes as it returns)
/// and 1 injection.
fn check_signal_counts(output: &ChaosUserOutput, label: &str) -> Result<(), String> {
    let injected = format!("syschaos: {label}: getppid SIGKILL via signal: 1 injected");
    if !output.status.success() || !output.stderr.lines().any(|line| line == injected) {
        return Err(format!(
            "chaos-user ({}) should say `{injected}`; stderr:\n{}",
            output.status, output.stderr
        ));
    }
    let last = output.stdout.last().ok_or("no JSON snapshot on stdout")?;
    let snapshot = json::parse(last).map_err(|e| format!("bad JSON line ({e}): {last}"))?;
    let calls = snapshot
        .get("targets")
        .map_or(&[][..], json::Value::as_array)
        .iter()
        .filter(|t| t.get("target").and_then(json::Value::as_str) == Some(label))
        .flat_map(|t| t.get("syscalls").map_or(&[][..], json::Value::as_array))
        .find(|s| s.get("syscall").and_then(json::Value::as_str) == Some("getppid"))
        .and_then(|s| s.get("calls_total")?.as_u64());
    if calls != Some(5) {
        return Err(format!(
            "the monitor should count 5 getppid of the target: {last}"
        ));
    }
    Ok(())
}

/// Each engine doctor says is unavailable, forced on a call it covers, is refused with doctor's
/// reason; nothing is left loaded, and the target's calls go on unharmed.
pub fn engines_refused() -> Result<(), String> {
    let target = prepare_inject("engines-refused")?;
    let report = doctor_report()?;
    let mut failures = Vec::new();
    for (engine, state) in doctor_engines(&report) {
        let Err(reason) = state else {
            continue;
        };
        let rule: &[&str] = match engine.as_str() {
            "lsm" => &["--syscall", "openat", "--errno", "EACCES"],
            "cgroup-sock" => &["--syscall", "connect", "--errno", "ECONNREFUSED"],
            "signal" => &["--syscall", "getppid", "--signal", "SIGKILL"],
            _ => &["--syscall", "getppid", "--errno", "EPERM"],
        };
        println!("  {engine}: unavailable ({reason}): must be refused with that reason");
        let mut args = vec!["--engine", engine.as_str()];
        args.extend(rule);
        let refused = expect_refusal(&target, &args, &[engine.as_str(), reason.as_str()]);
        failures.extend(refused.err());
        failures.extend(no_programs_left().err());
    }
    let faults = [
        fault("getppid", libc::EPERM, "EPERM"),
        fault("openat", libc::EACCES, "EACCES"),
        fault("connect", libc::ECONNREFUSED, "ECONNREFUSED"),
    ];
    failures.extend(after_round(&target, &faults).err());
    match failures.is_empty() {
        true => Ok(()),
        false => Err(failures.join("\n  and: ")),
    }
}
