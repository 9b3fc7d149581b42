//! monitor: counting a cgroup's system calls on a pure cgroup v2 host; monitor-no-latency: the
//! same counted at syscall exit alone (`--no-latency`; before 5.15 the entry program stays for
//! `exit` and `exit_group`).
use std::{io, path::Path, time::Duration};

use crate::{
    helpers::{ChaosUser, ChaosUserOutput, expect_success, spawn_in_cgroup, workload},
    json,
};

pub fn monitor() -> Result<(), String> {
    monitor_with(&[])
}

pub fn monitor_no_latency() -> Result<(), String> {
    monitor_with(&["--no-latency"])
}

fn monitor_with(extra: &[&str]) -> Result<(), String> {
    let cgroup = Path::new("/sys/fs/cgroup/t1");
    match std::fs::create_dir(cgroup) {
        Err(e) if e.kind() != io::ErrorKind::AlreadyExists => {
            return Err(format!("mkdir {}: {e}", cgroup.display()));
        }
        _ => {}
    }
    let mut chaos_user = ChaosUser::on_cgroup("attach", "/sys/fs/cgroup/t1", "8s", extra)?;
    // TCG is slow and the verifier runs in it.
    chaos_user.wait_attached(Duration::from_secs(60))?;
    let inside = spawn_in_cgroup(
        workload(&["calls", "--getppid", "1000", "--open-missing", "50"]),
        cgroup,
    )
    .map_err(|e| format!("starting the workload in {}: {e}", cgroup.display()))?;
    let outside = workload(&["calls", "--getppid", "500"])
        .spawn()
        .map_err(|e| format!("starting the workload outside the cgroup: {e}"))?;
    expect_success(inside, "workload in t1")?;
    expect_success(outside, "workload outside t1")?;

    let output = chaos_user.finish(Duration::from_secs(60))?;
    check_monitor_output(&output, "/sys/fs/cgroup/t1")?;
    crate::inject::no_programs_left()
}

/// Checks the JSON snapshots: exact getppid count (the workload outside the cgroup is not
/// counted), the 50 failed openat calls with ENOENT, and the workload's one `exit_group`.
fn check_monitor_output(output: &ChaosUserOutput, label: &str) -> Result<(), String> {
    let reports = output.json_lines("chaos-user")?;
    let Some(last) = reports.last() else {
        return Err(format!(
            "no JSON snapshot on stdout; stderr:\n{}",
            output.stderr
        ));
    };
    let calls_total =
        |name| syscall(last, label, name).and_then(|s| s.get("calls_total")?.as_u64());
    let getppid = calls_total("getppid").unwrap_or(0);
    if getppid != 1000 {
        return Err(format!(
            "getppid calls_total is {getppid}, expected 1000 (1500 would mean the workload \
             outside the cgroup was counted); last snapshot: {}",
            output.stdout.last().map_or("", String::as_str)
        ));
    }
    let exit_group = calls_total("exit_group").unwrap_or(0);
    if exit_group != 1 {
        return Err(format!(
            "exit_group calls_total is {exit_group}, expected 1 (the workload's)"
        ));
    }
    let openat = calls_total("openat").unwrap_or(0);
    if openat < 50 {
        return Err(format!(
            "openat calls_total is {openat}, expected at least 50"
        ));
    }
    // errnos are per interval: add them up.
    let enoent: u64 = reports
        .iter()
        .filter_map(|report| {
            syscall(report, label, "openat")?
                .get("errnos")?
                .get("ENOENT")?
                .as_u64()
        })
        .sum();
    if enoent != 50 {
        return Err(format!(
            "openat ENOENT failures add up to {enoent} over {} snapshots, expected 50",
            reports.len()
        ));
    }
    Ok(())
}

/// The entry of `syscall` for the target labelled `label` in one JSON snapshot.
fn syscall<'a>(report: &'a json::Value, label: &str, syscall: &str) -> Option<&'a json::Value> {
    let target = report
        .get("targets")?
        .as_array()
        .iter()
        .find(|t| t.get("target").and_then(json::Value::as_str) == Some(label))?;
    target
        .get("syscalls")?
        .as_array()
        .iter()
        .find(|s| s.get("syscall").and_then(json::Value::as_str) == Some(syscall))
}
