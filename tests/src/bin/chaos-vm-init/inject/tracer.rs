//! The tracer engines beyond errnos on calls that return at once (`inject-ptrace` and
//! `inject-stop` check those): delays that are delays, blocking calls, and what chaos-user and
//! the monitor count of them; the neighbour, making the same calls, untouched.
//!
//! - `inject-ptrace-delay`: getppid delayed 50 ms (held before it runs); a blocking pipe read
//!   failed with EAGAIN `when=before` (skipped: it never waits for its byte).
//! - `inject-stop-blocking`: getppid delayed 50 ms (held after it ran); a blocking pipe read and
//!   a blocking epoll_pwait delayed 200 ms: the engine's SIGSTOP interrupts them (read:
//!   -ERESTARTSYS, which the kernel restarts; epoll_pwait: -EINTR, which it does not), and each
//!   is re-issued after the delay and gets its byte, no EINTR seen by anyone; clock_nanosleep
//!   delayed 100 ms, interrupted with -ERESTART_RESTARTBLOCK (on arm64 it goes on as
//!   restart_syscall), each of them decided anew. Then a blocking read failed with EAGAIN:
//!   returned instead of it, after the rule's 30 ms.
use std::{
    path::Path,
    thread,
    time::{Duration, Instant},
};

use super::{
    NEIGHBOUR,
    engines::PTRACE_WAIT_MS,
    phase::{after_round, fault},
    prepare_inject,
};
use crate::{
    helpers::{ChaosUser, ChaosUserOutput, Outcome, Workload},
    json,
};

const MS: u64 = 1_000_000;
/// Calls of each kind: every one is held, and TCG is slow.
const CALLS: u64 = 5;
/// No bound on the neighbour's latency: its calls of that kind take their own time (a pipe read
/// waits 20 ms for its byte, longer under TCG) and the target's are not delayed.
const NO_BOUND: u64 = u64::MAX;

pub fn inject_ptrace_delay() -> Result<(), String> {
    let target = prepare_inject("inject-ptrace-delay")?;
    let round = Round::run(
        &target,
        &[
            "getppid,delay=50ms,engine=ptrace",
            "read=EAGAIN,when=before,engine=ptrace",
        ],
        &["--time-getppid", "--pipe-read"],
    )?;
    round.held("target", "time-getppid", 50 * MS)?;
    round.failing("target", "pipe-read", libc::EAGAIN)?;
    round.injected("getppid", "delay", "ptrace")?;
    round.injected("read", "EAGAIN", "ptrace")?;
    round.monitored("getppid", &[])?;
    round.monitored("read", &[("EAGAIN", CALLS)])?;
    round.neighbour_untouched(&[("time-getppid", 50 * MS), ("pipe-read", NO_BOUND)])?;
    after_round(&target, &faults())
}

pub fn inject_stop_blocking() -> Result<(), String> {
    let target = prepare_inject("inject-stop-blocking")?;
    let round = Round::run(
        &target,
        &[
            "getppid,delay=50ms,engine=stop",
            "read,delay=200ms,engine=stop",
            "epoll_pwait,delay=200ms,engine=stop",
            "clock_nanosleep,delay=100ms,engine=stop",
        ],
        &[
            "--time-getppid",
            "--pipe-read",
            "--epoll-wait",
            "--nanosleep",
        ],
    )?;
    round.held("target", "time-getppid", 50 * MS)?;
    round.held("target", "pipe-read", 200 * MS)?;
    round.held("target", "epoll-wait", 200 * MS)?;
    round.held("target", "nanosleep", 100 * MS)?;
    for syscall in ["getppid", "read", "epoll_pwait", "clock_nanosleep"] {
        round.injected(syscall, "delay", "stop")?;
    }
    // One call each, none failed: the interrupted exits are none the workload saw. (An
    // interrupted clock_nanosleep goes on as restart_syscall on arm64, and is counted so.)
    for syscall in ["getppid", "read", "epoll_pwait"] {
        round.monitored(syscall, &[])?;
    }
    round.neighbour_untouched(&[
        ("time-getppid", 50 * MS),
        ("pipe-read", 200 * MS),
        ("epoll-wait", 200 * MS),
        ("nanosleep", 100 * MS),
    ])?;
    let round = Round::run(
        &target,
        &["read=EAGAIN,delay=30ms,engine=stop"],
        &["--pipe-read"],
    )?;
    round.failing("target", "pipe-read", libc::EAGAIN)?;
    round.held("target", "pipe-read", 30 * MS)?;
    round.injected("read", "EAGAIN", "stop")?;
    round.monitored("read", &[("EAGAIN", CALLS)])?;
    round.neighbour_untouched(&[("pipe-read", NO_BOUND)])?;
    after_round(&target, &faults())
}

/// The tracer seized the workload `pid` before it starts its calls (it sleeps `wait` first).
fn seized_within(pid: u32, wait: Duration) -> Result<(), String> {
    let start = Instant::now();
    while start.elapsed() < wait {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        let tracer = status
            .lines()
            .find_map(|line| line.strip_prefix("TracerPid:"))
            .map(str::trim);
        if tracer.is_some_and(|t| t != "0") {
            println!(
                "    the tracer seized the target after {} ms",
                start.elapsed().as_millis()
            );
            return Ok(());
        }
        thread::sleep(Duration::from_millis(10));
    }
    Err(format!(
        "the tracer did not seize the target's workload within {} ms, before its calls",
        wait.as_millis()
    ))
}

/// What the after-round (chaos-user gone) makes: nothing of it may fail.
fn faults() -> [super::phase::Fault; 2] {
    [
        fault("getppid", libc::EPERM, "EPERM"),
        fault("read", libc::EAGAIN, "EAGAIN"),
    ]
}

/// One chaos-user run with `rules` on the target while the target and the neighbour make
/// `CALLS` calls of each kind.
struct Round {
    label: String,
    output: ChaosUserOutput,
    target: json::Value,
    neighbour: json::Value,
    /// The last JSON snapshot of chaos-user.
    snapshot: json::Value,
}

impl Round {
    fn run(target: &Path, rules: &[&str], kinds: &[&str]) -> Result<Self, String> {
        let label = target
            .to_str()
            .ok_or("cgroup path is not UTF-8")?
            .to_owned();
        println!("  {}", rules.join(" "));
        let args: Vec<&str> = rules.iter().flat_map(|rule| ["--rule", rule]).collect();
        let mut chaos_user = ChaosUser::on_cgroup("inject", &label, "60s", &args)?;
        chaos_user.wait_attached(Duration::from_secs(60))?;
        let mut workload = vec!["calls".to_owned()];
        for kind in kinds {
            workload.extend([(*kind).to_owned(), CALLS.to_string()]);
        }
        // The tracer seizes a process that enters the cgroup at its next scan; `slow`: the
        // calls held 50 ms or more.
        workload.extend(
            [
                "--wait-ms",
                &PTRACE_WAIT_MS.to_string(),
                "--slow-us",
                "50000",
            ]
            .map(str::to_owned),
        );
        let inside = Workload::start(&workload, target)?;
        let outside = Workload::start(&workload, Path::new(NEIGHBOUR))?;
        let seized = seized_within(inside.pid(), Duration::from_millis(PTRACE_WAIT_MS));
        let (inside, outside) = (inside.report(), outside.report());
        seized?;
        // Let one more JSON snapshot (1s interval) see the last injection.
        thread::sleep(Duration::from_millis(1500));
        chaos_user.interrupt()?;
        let output = chaos_user.finish(Duration::from_secs(60))?;
        if !output.status.success() {
            return Err(format!(
                "chaos-user exited with {}; stderr:\n{}",
                output.status, output.stderr
            ));
        }
        let last = output.stdout.last().ok_or("no JSON snapshot on stdout")?;
        let snapshot = json::parse(last).map_err(|e| format!("bad JSON line ({e}): {last}"))?;
        Ok(Self {
            label,
            target: inside?,
            neighbour: outside?,
            snapshot,
            output,
        })
    }

    fn report(&self, who: &str) -> &json::Value {
        match who {
            "target" => &self.target,
            _ => &self.neighbour,
        }
    }

    /// A latency field of `who`'s calls of `kind` (`min_ns`, `max_ns`, `slow`).
    fn latency(&self, who: &str, kind: &str, field: &str) -> Result<u64, String> {
        self.report(who)
            .get("calls")
            .and_then(|calls| calls.get(kind)?.get(field)?.as_u64())
            .ok_or_else(|| format!("no {kind}.{field} in the {who}'s report"))
    }

    /// Every call of `kind` took at least `at_least` (and, if it succeeded, got its result).
    fn held(&self, who: &str, kind: &str, at_least: u64) -> Result<(), String> {
        let min = self.latency(who, kind, "min_ns")?;
        println!("    {who} {kind}: the fastest took {} ms", min / MS);
        if min < at_least {
            return Err(format!(
                "the {who}'s {kind}: a call took {min} ns, all should take {at_least} ns or more; \
                 chaos-user's last snapshot of the target: {:?}",
                self.target_entries("syscalls").collect::<Vec<_>>()
            ));
        }
        let outcome = Outcome::of(self.report(who), kind)?;
        if outcome.calls != CALLS {
            return Err(format!(
                "the {who}'s {kind}: {outcome}, expected {CALLS} calls"
            ));
        }
        Ok(())
    }

    /// Every call of `kind` failed with `errno`.
    fn failing(&self, who: &str, kind: &str, errno: i32) -> Result<(), String> {
        let outcome = Outcome::of(self.report(who), kind)?;
        let every: Vec<u64> = (1..=CALLS).collect();
        if outcome.failed_at != every || outcome.errnos != [(errno.to_string(), CALLS)] {
            return Err(format!(
                "the {who}'s {kind}: {outcome}, expected all {CALLS} failing with errno {errno}; \
                 chaos-user's last snapshot of the target: {:?}",
                self.target_entries("syscalls").collect::<Vec<_>>()
            ));
        }
        Ok(())
    }

    /// chaos-user counted `CALLS` injections of the rule on `syscall`, at exit and in its last
    /// JSON snapshot.
    fn injected(&self, syscall: &str, fault: &str, engine: &str) -> Result<(), String> {
        let line = format!(
            "syschaos: {}: {syscall} {fault} via {engine}: {CALLS} injected",
            self.label
        );
        if !self.output.stderr.lines().any(|l| l == line) {
            return Err(format!(
                "chaos-user should say `{line}`; stderr:\n{}",
                self.output.stderr
            ));
        }
        let injection = self
            .target_entries("injections")
            .find(|i| i.get("syscall").and_then(json::Value::as_str) == Some(syscall));
        let field = |name| injection.and_then(|i| i.get(name));
        let matches = field("count").and_then(json::Value::as_u64) == Some(CALLS)
            && field("fault").and_then(json::Value::as_str) == Some(fault)
            && field("engine").and_then(json::Value::as_str) == Some(engine);
        if !matches {
            return Err(format!(
                "the last JSON snapshot should report {CALLS} {syscall} {fault} injections via \
                 {engine}: {injection:?}"
            ));
        }
        Ok(())
    }

    /// The monitor counted `CALLS` calls of `syscall` of the target, failing with exactly
    /// `errnos` (an interrupted call re-issued counts once, with no EINTR).
    fn monitored(&self, syscall: &str, errnos: &[(&str, u64)]) -> Result<(), String> {
        let stats = self
            .target_entries("syscalls")
            .find(|s| s.get("syscall").and_then(json::Value::as_str) == Some(syscall));
        let calls = stats.and_then(|s| s.get("calls_total")?.as_u64());
        let seen: Vec<(String, u64)> = match stats.and_then(|s| s.get("errnos_total")) {
            Some(json::Value::Object(members)) => members
                .iter()
                .map(|(name, n)| (name.clone(), n.as_u64().unwrap_or(0)))
                .collect(),
            _ => Vec::new(),
        };
        let expected: Vec<(String, u64)> = errnos.iter().map(|&(e, n)| (e.to_owned(), n)).collect();
        if calls != Some(CALLS) || seen != expected {
            return Err(format!(
                "the monitor should count {CALLS} {syscall} of the target failing with \
                 {expected:?}: {calls:?} calls, errnos {seen:?}"
            ));
        }
        Ok(())
    }

    /// The neighbour's calls of each kind all succeeded, none taking as long as the bound given
    /// with it (the target's delay).
    fn neighbour_untouched(&self, kinds: &[(&str, u64)]) -> Result<(), String> {
        for &(kind, held) in kinds {
            let outcome = Outcome::of(&self.neighbour, kind)?;
            let max = self.latency("neighbour", kind, "max_ns")?;
            if outcome.calls != CALLS || outcome.failed != 0 || max >= held {
                return Err(format!(
                    "the neighbour's {kind}: {outcome}, slowest {max} ns; expected {CALLS} \
                     calls, no failure, none held {held} ns"
                ));
            }
        }
        Ok(())
    }

    /// The target's entries of the last snapshot's `field` (`injections`, `syscalls`).
    fn target_entries(&self, field: &str) -> impl Iterator<Item = &json::Value> {
        self.snapshot
            .get("targets")
            .map_or(&[][..], json::Value::as_array)
            .iter()
            .filter(|t| t.get("target").and_then(json::Value::as_str) == Some(&self.label))
            .flat_map(move |t| t.get(field).map_or(&[][..], json::Value::as_array))
    }
}
