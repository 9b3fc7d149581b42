//! What the tests of inject_ptrace.rs share: the workload's latency stats, the threads of a
//! container and their tracer, a strace to compete with.
use std::{fs, process::Child, time::Duration};

use tests::{attach::Attach, docker::Container, wait_for};

pub const MS: u64 = 1_000_000;

/// A numeric field of a call kind in the workload's report of `round` (latency stats).
fn report_field(container: &Container, round: u64, kind: &str, field: &str) -> u64 {
    let logs = container.logs();
    let line = logs
        .lines()
        .rfind(|line| line.contains(&format!("\"round\":{round},")))
        .unwrap_or_else(|| panic!("no report of round {round} in {logs}"));
    let json: serde_json::Value = serde_json::from_str(line).expect("a JSON report");
    json["calls"][kind][field]
        .as_u64()
        .unwrap_or_else(|| panic!("no {kind}.{field} in {line}"))
}

/// chaos-user failing every `getppid` of `web` with EPERM on the ptrace engine.
pub fn getppid_eperm_by_ptrace(web: &Container) -> Attach {
    Attach::inject(&[
        "--container",
        &web.name,
        "--syscall",
        "getppid",
        "--errno",
        "EPERM",
        "--engine",
        "ptrace",
    ])
}

/// The latency stats of `time-getppid` in a round: (min, p50, max, slow) in ns / calls.
pub fn timing(container: &Container, round: u64) -> (u64, u64, u64, u64) {
    let field = |name| report_field(container, round, "time-getppid", name);
    (
        field("min_ns"),
        field("p50_ns"),
        field("max_ns"),
        field("slow"),
    )
}

/// Every thread of every process in the container's cgroup: (tid, state letter, TracerPid).
pub fn threads_of(container: &Container) -> Vec<(u32, char, u32)> {
    let pid = container.pid();
    let cgroup = fs::read_to_string(format!("/proc/{pid}/cgroup")).expect("the container's cgroup");
    let relative = cgroup
        .lines()
        .find_map(|line| line.strip_prefix("0::"))
        .expect("a cgroup v2 line")
        .trim_start_matches('/')
        .to_owned();
    let root = tests::cgroup_v2_root();
    let procs = fs::read_to_string(root.join(relative).join("cgroup.procs")).expect("cgroup.procs");
    let mut threads = Vec::new();
    for process in procs.lines() {
        let Ok(tasks) = fs::read_dir(format!("/proc/{process}/task")) else {
            continue;
        };
        for task in tasks.flatten() {
            let tid: u32 = task.file_name().to_string_lossy().parse().expect("a tid");
            let stat = fs::read_to_string(task.path().join("stat")).unwrap_or_default();
            let Some((_, rest)) = stat.rsplit_once(')') else {
                continue;
            };
            let state = rest.trim_start().chars().next().unwrap_or('?');
            let status = fs::read_to_string(task.path().join("status")).unwrap_or_default();
            let tracer = status
                .lines()
                .find_map(|line| line.strip_prefix("TracerPid:"))
                .and_then(|pid| pid.trim().parse().ok())
                .unwrap_or(0);
            threads.push((tid, state, tracer));
        }
    }
    assert!(
        !threads.is_empty(),
        "no thread found for {}",
        container.name
    );
    threads
}

/// No thread stopped (t: ptrace-stopped, T: job-control stopped) and none traced.
pub fn assert_running_untraced(container: &Container) {
    // The kernel may take a moment to let the last tracee go after chaos-user died.
    let threads = wait_for(
        "every thread to run untraced",
        Duration::from_secs(5),
        || {
            let threads = threads_of(container);
            threads
                .iter()
                .all(|&(_, state, tracer)| !matches!(state, 't' | 'T') && tracer == 0)
                .then_some(threads)
        },
    );
    eprintln!("threads of {} after detach: {threads:?}", container.name);
}

pub fn assert_ptrace_rules(attach: &Attach, rules: usize) {
    let stderr = attach.stderr();
    assert_eq!(stderr.matches("via ptrace").count(), rules, "{stderr}");
}

/// `strace -p PID`, killed when dropped.
pub struct Strace(pub Child);

impl Drop for Strace {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The state letters of the container's threads.
pub fn states(container: &Container) -> Vec<char> {
    threads_of(container)
        .into_iter()
        .map(|(_, state, _)| state)
        .collect()
}
