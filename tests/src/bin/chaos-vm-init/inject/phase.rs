//! One phase of an inject-* test: a chaos-user run with its rules while the target and neighbour
//! workloads make their calls, and the checks of what each of them saw.
use std::{
    path::Path,
    thread,
    time::{Duration, Instant},
};

use super::{DATA_DIR, NEIGHBOUR, OPEN_PATH, OPEN_PREFIX};
use crate::{
    helpers::{ChaosUser, ChaosUserOutput, Outcome, Workload},
    json,
};

/// Calls of each kind per round: TCG is slow, and 10 is enough for count=3 and nth=4.
const CALLS: u64 = 10;
/// getppid calls for the probability check, and the range that passes: 0.5 * 1000 plus or minus
/// 6 standard deviations (sqrt(1000 * 0.5 * 0.5) = 15.8), so a correct engine fails it about once
/// in 500 million runs.
const PROBABILITY_CALLS: u64 = 1000;
const PROBABILITY_RANGE: (u64, u64) = (405, 595);

/// A kind of call the rules of a phase make fail.
#[derive(Clone, Copy)]
pub(super) struct Fault {
    syscall: &'static str,
    /// The workload's name for those calls (its `--KIND N` option and report key).
    kind: &'static str,
    errno: i32,
    errno_name: &'static str,
}

pub(super) const fn fault(syscall: &'static str, errno: i32, errno_name: &'static str) -> Fault {
    let kind = match syscall.as_bytes() {
        b"openat" => "open-missing",
        _ => syscall,
    };
    Fault {
        syscall,
        kind,
        errno,
        errno_name,
    }
}

/// Which of the target's calls must fail.
pub(super) enum Expect {
    /// Exactly these call numbers (1-based), with the fault's errno.
    At(&'static [u64]),
    /// Between so many failures (inclusive), with the fault's errno.
    Between(u64, u64),
}

/// One chaos-user run with its rules, and the workload round it perturbs.
pub(super) struct Phase {
    /// For messages, e.g. "count=3".
    name: String,
    chaos_args: Vec<String>,
    faults: Vec<Fault>,
    /// Calls of each kind the workloads make.
    calls: u64,
    expect: Expect,
    /// How long the workloads sleep before their calls (`--wait-ms`).
    wait_ms: u64,
}

impl Phase {
    /// One `--rule SYSCALL=ERRNO,LIMIT` per fault (openat's with the path prefix), engine auto.
    pub(super) fn rules(faults: &[Fault], limit: &str, expect: Expect) -> Self {
        let chaos_args = faults
            .iter()
            .flat_map(|f| {
                let mut rule = format!("{}={},{limit}", f.syscall, f.errno_name);
                if f.syscall == "openat" {
                    rule.push_str(&format!(",path-prefix={OPEN_PREFIX}"));
                }
                ["--rule".to_owned(), rule]
            })
            .collect();
        Self {
            name: limit.to_owned(),
            chaos_args,
            faults: faults.to_vec(),
            calls: CALLS,
            expect,
            wait_ms: 0,
        }
    }

    /// The workloads sleep this long before their calls: the ptrace engine seizes a process that
    /// enters the cgroup at its next scan (every 100 ms, slower under TCG), not at once.
    pub(super) fn waiting(mut self, ms: u64) -> Self {
        self.wait_ms = ms;
        self
    }

    /// `--syscall getppid --errno EPERM --probability 0.5 --engine auto` over 1000 calls.
    pub(super) fn probability() -> Self {
        let getppid = fault("getppid", libc::EPERM, "EPERM");
        let args = [
            "--syscall",
            getppid.syscall,
            "--errno",
            getppid.errno_name,
            "--probability",
            "0.5",
            "--engine",
            "auto",
        ];
        Self {
            name: "probability=0.5".to_owned(),
            chaos_args: args.map(str::to_owned).to_vec(),
            faults: vec![getppid],
            calls: PROBABILITY_CALLS,
            expect: Expect::Between(PROBABILITY_RANGE.0, PROBABILITY_RANGE.1),
            wait_ms: 0,
        }
    }
}

/// Runs chaos-user with the phase's rules on `target` while the target and neighbour workloads
/// make their calls, then checks what everyone saw, and that nothing outlives chaos-user.
pub(super) fn run_phase(target: &Path, phase: &Phase, engine: &str) -> Result<(), String> {
    println!(
        "  phase {}: {} rule(s) via {engine}",
        phase.name,
        phase.faults.len()
    );
    let label = target.to_str().ok_or("cgroup path is not UTF-8")?;
    let rules: Vec<&str> = phase.chaos_args.iter().map(String::as_str).collect();
    let in_phase = |e: String| format!("{}: {e}", phase.name);
    let mut chaos_user = ChaosUser::on_cgroup("inject", label, "60s", &rules).map_err(in_phase)?;
    chaos_user
        .wait_attached(Duration::from_secs(60))
        .map_err(in_phase)?;
    let args = |who| {
        let mut args = workload_args(&phase.faults, phase.calls, who);
        args.extend(["--wait-ms".to_owned(), phase.wait_ms.to_string()]);
        args
    };
    let inside = Workload::start(&args("target"), target);
    let outside = Workload::start(&args("neighbour"), Path::new(NEIGHBOUR));
    let (inside, outside) = (inside?.report(), outside?.report());
    // Let one more JSON snapshot (1s interval) see the last injection.
    thread::sleep(Duration::from_millis(1500));
    chaos_user.interrupt()?;
    let output = chaos_user
        .finish(Duration::from_secs(60))
        .map_err(in_phase)?;
    if !output.status.success() {
        return Err(in_phase(format!(
            "chaos-user exited with {}; stderr:\n{}",
            output.status, output.stderr
        )));
    }
    let (inside, outside) = (inside.map_err(in_phase)?, outside.map_err(in_phase)?);
    for fault in &phase.faults {
        if let Ok(outcome) = Outcome::of(&inside, fault.kind) {
            println!("    target {}: {outcome}", fault.kind);
        }
    }
    check_engines(&output, &phase.faults, engine).map_err(in_phase)?;
    for fault in &phase.faults {
        // With what chaos-user saw of the target, should no fault have reached it.
        let last = output.stdout.last().map_or("(none)", String::as_str);
        let failed = check_target(&inside, fault, phase).map_err(|e| {
            in_phase(format!(
                "{e}; chaos-user's last snapshot: {last}; stderr:\n{}",
                output.stderr
            ))
        })?;
        check_reported(&output, label, fault, engine, failed).map_err(in_phase)?;
        let neighbour = Outcome::of(&outside, fault.kind).map_err(in_phase)?;
        if neighbour.calls != phase.calls || neighbour.failed != 0 {
            return Err(in_phase(format!(
                "the neighbour's {}: {neighbour}, expected {} calls and no failure",
                fault.kind, phase.calls
            )));
        }
    }
    after_round(target, &phase.faults).map_err(in_phase)
}

/// `--KIND N` for each fault, the file to open and a data file of the workload's own.
fn workload_args(faults: &[Fault], calls: u64, who: &str) -> Vec<String> {
    let mut args = vec!["calls".to_owned()];
    for fault in faults {
        args.extend([format!("--{}", fault.kind), calls.to_string()]);
    }
    args.extend([
        "--path".to_owned(),
        OPEN_PATH.to_owned(),
        "--file".to_owned(),
        format!("{DATA_DIR}/{who}.data"),
    ]);
    args
}

/// The `injecting` line names, for each rule, the engine `auto` chose.
fn check_engines(output: &ChaosUserOutput, faults: &[Fault], engine: &str) -> Result<(), String> {
    let injecting = output
        .stderr
        .lines()
        .find_map(|line| line.strip_prefix("syschaos: injecting "))
        .ok_or_else(|| format!("no `syschaos: injecting` line; stderr:\n{}", output.stderr))?;
    for fault in faults {
        let rule = injecting
            .split("; ")
            .find(|rule| rule.starts_with(&format!("{} ", fault.syscall)))
            .ok_or_else(|| {
                format!(
                    "the injecting line has no {} rule: {injecting}",
                    fault.syscall
                )
            })?;
        if !rule.contains(&format!(" via {engine}")) {
            return Err(format!(
                "{} should go through the {engine} engine: {rule}",
                fault.syscall
            ));
        }
    }
    Ok(())
}

/// The target's calls of the fault's kind failed as the phase expects; returns how many failed.
fn check_target(report: &json::Value, fault: &Fault, phase: &Phase) -> Result<u64, String> {
    let outcome = Outcome::of(report, fault.kind)?;
    let errno = fault.errno.to_string();
    let only_our_errno = outcome.errnos.iter().all(|(e, _)| *e == errno);
    let right = outcome.calls == phase.calls
        && only_our_errno
        && match phase.expect {
            Expect::At(calls) => outcome.failed_at == calls,
            Expect::Between(low, high) => (low..=high).contains(&outcome.failed),
        };
    if !right {
        let expected = match phase.expect {
            Expect::At(calls) => format!("calls {calls:?} failing"),
            Expect::Between(low, high) => format!("{low} to {high} failures"),
        };
        return Err(format!(
            "the target's {}: {outcome}; expected {} calls with {expected}, all {} ({})",
            fault.kind, phase.calls, fault.errno_name, fault.errno
        ));
    }
    Ok(outcome.failed)
}

/// chaos-user's own count of the rule's injections, at exit and in the last JSON snapshot, is
/// what the workload saw.
fn check_reported(
    output: &ChaosUserOutput,
    label: &str,
    fault: &Fault,
    engine: &str,
    failed: u64,
) -> Result<(), String> {
    let prefix = format!(
        "syschaos: {label}: {} {} via {engine}: ",
        fault.syscall, fault.errno_name
    );
    let at_exit = output
        .stderr
        .lines()
        .find_map(|line| line.strip_prefix(&prefix)?.strip_suffix(" injected"))
        .ok_or_else(|| format!("no `{prefix}N injected` line; stderr:\n{}", output.stderr))?;
    if at_exit != failed.to_string() {
        return Err(format!(
            "chaos-user says {at_exit} {} injections, the workload saw {failed} failures",
            fault.syscall
        ));
    }
    let last = output.stdout.last().ok_or("no JSON snapshot on stdout")?;
    let snapshot = json::parse(last).map_err(|e| format!("bad JSON line ({e}): {last}"))?;
    let injection = snapshot
        .get("targets")
        .map_or(&[][..], json::Value::as_array)
        .iter()
        .filter(|t| t.get("target").and_then(json::Value::as_str) == Some(label))
        .flat_map(|t| t.get("injections").map_or(&[][..], json::Value::as_array))
        .find(|i| i.get("syscall").and_then(json::Value::as_str) == Some(fault.syscall));
    let field = |name| injection.and_then(|i| i.get(name));
    let matches = field("count").and_then(json::Value::as_u64) == Some(failed)
        && field("fault").and_then(json::Value::as_str) == Some(fault.errno_name)
        && field("engine").and_then(json::Value::as_str) == Some(engine);
    if !matches {
        return Err(format!(
            "the last JSON snapshot should report {failed} {} {} injections via {engine}: {last}",
            fault.syscall, fault.errno_name
        ));
    }
    check_monitored(output, label, fault, engine, failed)
}

/// The monitor saw every injected fault under its syscall and errno: its count of the target's
/// failures with that errno (`errnos_total` of the last JSON line) is the injections'. Every
/// failure of the target's calls in these rounds is an injected one.
fn check_monitored(
    output: &ChaosUserOutput,
    label: &str,
    fault: &Fault,
    engine: &str,
    failed: u64,
) -> Result<(), String> {
    let last = output.stdout.last().ok_or("no JSON snapshot on stdout")?;
    let snapshot = json::parse(last).map_err(|e| format!("bad JSON line ({e}): {last}"))?;
    let seen: u64 = snapshot
        .get("targets")
        .map_or(&[][..], json::Value::as_array)
        .iter()
        .filter(|t| t.get("target").and_then(json::Value::as_str) == Some(label))
        .flat_map(|t| t.get("syscalls").map_or(&[][..], json::Value::as_array))
        .filter(|s| s.get("syscall").and_then(json::Value::as_str) == Some(fault.syscall))
        .filter_map(|s| s.get("errnos_total")?.get(fault.errno_name)?.as_u64())
        .sum();
    if seen != failed {
        return Err(format!(
            "the monitor counted {seen} {} {} failures of the target, {failed} were injected via \
             {engine}: {last}",
            fault.syscall, fault.errno_name
        ));
    }
    Ok(())
}

/// Once chaos-user has exited: no BPF program and no kprobe of ours is left, and a further round
/// in the same cgroup sees no failure.
pub(super) fn after_round(target: &Path, faults: &[Fault]) -> Result<(), String> {
    no_programs_left()?;
    no_kprobes_left()?;
    let report = Workload::start(&workload_args(faults, CALLS, "after"), target)?.report()?;
    for fault in faults {
        let outcome = Outcome::of(&report, fault.kind)?;
        if outcome.failed != 0 {
            return Err(format!(
                "after chaos-user exited, the target's {} still failed: {outcome}",
                fault.kind
            ));
        }
    }
    Ok(())
}

/// No BPF program is loaded (nothing but chaos-user loads any in the VM): the ids the kernel
/// lists (`BPF_PROG_GET_NEXT_ID`) are gone. They go when the last descriptor and link of each
/// closes, which may trail chaos-user's exit a little.
pub(crate) fn no_programs_left() -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let ids = program_ids()?;
        if ids.is_empty() {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(format!(
                "BPF programs still loaded 5 s after chaos-user exited: ids {ids:?}"
            ));
        }
        thread::sleep(Duration::from_millis(100));
    }
}

/// The ids of every loaded BPF program.
fn program_ids() -> Result<Vec<u32>, String> {
    const BPF_PROG_GET_NEXT_ID: libc::c_long = 11;
    // union bpf_attr for BPF_*_GET_NEXT_ID: start_id, next_id, open_flags.
    let mut ids = Vec::new();
    let mut attr = [0u32; 3];
    loop {
        // SAFETY: bpf(2) reads and writes the 12 bytes of `attr` we pass with their size.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_bpf,
                BPF_PROG_GET_NEXT_ID,
                attr.as_mut_ptr(),
                std::mem::size_of_val(&attr),
            )
        };
        if rc != 0 {
            let error = std::io::Error::last_os_error();
            return match error.raw_os_error() {
                Some(libc::ENOENT) => Ok(ids),
                _ => Err(format!("bpf(BPF_PROG_GET_NEXT_ID): {error}")),
            };
        }
        ids.push(attr[1]);
        attr = [attr[1], 0, 0];
    }
}

/// The kprobe engine's probes on `__x64_sys_*` (`__arm64_sys_*`) are gone (they go when chaos-user's descriptors
/// are closed, which may trail its exit a little). Skipped without debugfs's kprobes list.
fn no_kprobes_left() -> Result<(), String> {
    const LIST: &str = "/sys/kernel/debug/kprobes/list";
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        let Ok(list) = std::fs::read_to_string(LIST) else {
            return Ok(());
        };
        let ours: Vec<&str> = list
            .lines()
            .filter(|l| l.contains(crate::SYSCALL_PREFIX))
            .collect();
        if ours.is_empty() {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(format!(
                "kprobes still registered after chaos-user exited: {}",
                ours.join("; ")
            ));
        }
        thread::sleep(Duration::from_millis(100));
    }
}
