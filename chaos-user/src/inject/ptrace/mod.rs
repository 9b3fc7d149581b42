//! Engine `ptrace`: errno and/or delay before any syscall, on any kernel, from outside the
//! container. No eBPF program: the tracer is chaos-user itself. A dedicated OS thread owns the
//! tracer (ptrace requests must come from the thread that attached): it seizes every thread of the target cgroups (`attach.rs`), handles their
//! stops (`tracer.rs`), applies the rules (`rules.rs`), and detaches all on request
//! (`detach.rs`). The session holds it as a [`PtraceEngine`] (`handle.rs`) and reads the
//! injection counts through atomics.
//!
//! If chaos-user dies, the kernel detaches the tracees (no `PTRACE_O_EXITKILL`): they run on.
mod attach;
mod detach;
mod handle;
mod rules;
mod seen;
mod stops;
mod sys;
mod tracer;

use std::{
    path::PathBuf,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
        mpsc,
    },
    thread::JoinHandle,
    time::Duration,
};

pub use self::{handle::PtraceEngine, rules::PtraceRule, seen::SkippedCalls, stops::StopFaults};
use crate::inject::{InjectError, engine::EngineError, stop::guardian::Guardian};

/// A target as the tracer knows it: where to find its threads.
#[derive(Debug, Clone)]
pub struct PtraceTarget {
    pub label: String,
    /// Its cgroup v2 directory (`cgroup.threads` is read there).
    pub cgroup_dir: PathBuf,
    /// The directory's inode: a cgroup recreated at the same path (a restarting container) is
    /// another cgroup, not seized until the session follows it, as the kernel engines do.
    pub cgroup_id: u64,
    /// The slot the monitor counts it under.
    pub slot: u32,
}

/// What the session and the tracer thread share.
struct Shared {
    stop: AtomicBool,
    /// (target index, new cgroup directory and id): a container restarted.
    retarget: Mutex<Vec<(usize, PathBuf, u64)>>,
}

/// The tracer thread, running. Dropping it detaches from every tracee.
pub struct TracerThread {
    shared: Arc<Shared>,
    tracer_tid: i32,
    thread: Option<JoinHandle<detach::Summary>>,
    labels: Vec<String>,
    /// With stop-engine rules: continues the targets if chaos-user dies.
    guardian: Option<Guardian>,
}

/// How long the initial attach may take (threads in uninterruptible sleep stop late).
const ATTACH_TIMEOUT: Duration = Duration::from_secs(30);

impl TracerThread {
    /// Seizes every thread of the targets and starts applying `rules`, and the stop engine's
    /// faults with `stop_faults`; `skipped` tells the monitor of the calls it skips. Returns once
    /// each thread is traced, or with the reason one cannot be (already traced by another
    /// tracer...), in which case nothing stays attached.
    pub fn start(
        targets: Vec<PtraceTarget>,
        rules: Vec<PtraceRule>,
        skipped: SkippedCalls,
        stop_faults: Option<StopFaults>,
    ) -> Result<Self, InjectError> {
        // Started first: it must be there the moment a thread can be held.
        let guardian = match stop_faults {
            Some(_) => Some(
                Guardian::start(targets.iter().map(|t| t.cgroup_dir.as_path()))
                    .map_err(|e| ptrace_error(format!("cannot start the stop guardian: {e}")))?,
            ),
            None => None,
        };
        let shared = Arc::new(Shared {
            stop: AtomicBool::new(false),
            retarget: Mutex::new(Vec::new()),
        });
        let labels = targets.iter().map(|t| t.label.clone()).collect();
        let (ready_tx, ready_rx) = mpsc::channel();
        let thread_shared = shared.clone();
        let thread = std::thread::Builder::new()
            .name("syschaos-ptrace".into())
            .spawn(move || {
                tracer::run(
                    targets,
                    rules,
                    thread_shared,
                    skipped,
                    stop_faults,
                    ready_tx,
                )
            })
            .map_err(|e| ptrace_error(format!("cannot start the tracer thread: {e}")))?;
        match ready_rx.recv_timeout(ATTACH_TIMEOUT) {
            Ok(Ok(tracer_tid)) => Ok(Self {
                shared,
                tracer_tid,
                thread: Some(thread),
                labels,
                guardian,
            }),
            Ok(Err(error)) => {
                let _ = thread.join();
                Err(error)
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {
                // Still attaching: ask it to stop and detach what it has.
                shared.stop.store(true, Ordering::SeqCst);
                Err(ptrace_error(format!(
                    "attaching took longer than {ATTACH_TIMEOUT:?}"
                )))
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => Err(ptrace_error(
                "the tracer thread ended while attaching (the kernel released its tracees)".into(),
            )),
        }
    }

    /// The target with this label now lives in another cgroup (a restarted container).
    pub fn retarget(&mut self, label: &str, cgroup_dir: PathBuf, cgroup_id: u64) {
        if let Some(index) = self.labels.iter().position(|l| l == label) {
            if let Some(guardian) = &mut self.guardian {
                guardian.watch(&cgroup_dir);
            }
            crate::lock(&self.shared.retarget).push((index, cgroup_dir, cgroup_id));
            sys::wake(self.tracer_tid);
        }
    }

    /// Detaches from every tracee: each continues, none stays stopped, signals that arrived
    /// meanwhile are delivered, decided errnos are completed. Idempotent.
    pub fn stop(&mut self) {
        let Some(thread) = self.thread.take() else {
            return;
        };
        self.shared.stop.store(true, Ordering::SeqCst);
        // The wake-up may land just before the thread blocks: repeat it until the thread ends.
        while !thread.is_finished() {
            sys::wake(self.tracer_tid);
            std::thread::sleep(Duration::from_millis(2));
        }
        match thread.join() {
            Ok(summary) if summary.left_attached > 0 => eprintln!(
                "syschaos: ptrace: detached {} threads; {} never stopped (zombies or in uninterruptible sleep) and were released by the kernel",
                summary.detached, summary.left_attached
            ),
            Ok(_) => {}
            Err(_) => eprintln!(
                "syschaos: ptrace: the tracer thread panicked; the kernel released its tracees"
            ),
        }
        if let Some(guardian) = self.guardian.take() {
            guardian.dismiss();
        }
    }
}

impl Drop for TracerThread {
    fn drop(&mut self) {
        self.stop();
    }
}

fn ptrace_error(why: String) -> InjectError {
    InjectError::Ptrace(why)
}

/// Whether this host lets chaos-user use the ptrace engine, and why not.
pub fn probe() -> Result<(), EngineError> {
    probe_host()?;
    try_seize()
}

/// What the tracer needs of the host, checked without tracing anything.
pub fn probe_host() -> Result<(), EngineError> {
    if std::fs::read_to_string("/proc/sys/kernel/yama/ptrace_scope")
        .is_ok_and(|scope| scope.trim() == "3")
    {
        return Err(host(
            "Yama forbids ptrace entirely (kernel.yama.ptrace_scope = 3)",
        ));
    }
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let mut version = release
        .trim()
        .split(|c: char| !c.is_ascii_digit())
        .map(|n| n.parse::<u32>().unwrap_or(0));
    let (major, minor) = (version.next().unwrap_or(0), version.next().unwrap_or(0));
    if (major, minor) < (5, 3) {
        return Err(EngineError::Host(format!(
            "kernel {} lacks PTRACE_GET_SYSCALL_INFO (5.3+)",
            release.trim()
        )));
    }
    // CAP_SYS_PTRACE is bit 19 of the effective set.
    let effective = sys::status_field(std::process::id() as i32, "CapEff")
        .and_then(|hex| u64::from_str_radix(&hex, 16).ok())
        .unwrap_or(0);
    if effective & (1 << 19) == 0 {
        return Err(host("chaos-user lacks CAP_SYS_PTRACE"));
    }
    Ok(())
}

/// Seizes, interrupts and releases a child of ours: what the engine does to a target's threads,
/// tried for real (a seccomp profile or an LSM that forbids ptrace refuses it here).
fn try_seize() -> Result<(), EngineError> {
    use nix::sys::{
        ptrace,
        wait::{WaitPidFlag, waitpid},
    };
    with_seized_child(|child| {
        ptrace::interrupt(child)?;
        waitpid(child, Some(WaitPidFlag::__WALL))?;
        ptrace::detach(child, None)
    })
    .map_err(|e| {
        EngineError::Host(format!(
            "PTRACE_SEIZE of a child of ours is refused ({e}): a seccomp profile, an LSM or a tracer of chaos-user itself forbids it"
        ))
    })
}

/// Forks a child that pauses, seizes it (PTRACE_SEIZE, no options), runs `action` on it, and kills
/// it: an engine's way of tracing, tried on a process of our own.
pub fn with_seized_child(
    action: impl FnOnce(nix::unistd::Pid) -> nix::Result<()>,
) -> Result<(), String> {
    use nix::{
        sys::{
            ptrace,
            signal::{Signal, kill},
            wait::{WaitPidFlag, waitpid},
        },
        unistd::{ForkResult, fork},
    };
    // SAFETY: the child calls only pause (async-signal-safe) until the parent kills it.
    let child = match unsafe { fork() } {
        Ok(ForkResult::Child) => loop {
            // SAFETY: pause has no preconditions.
            unsafe { libc::pause() };
        },
        Ok(ForkResult::Parent { child }) => child,
        Err(e) => return Err(format!("cannot fork a child to trace: {e}")),
    };
    let traced = ptrace::seize(child, ptrace::Options::empty()).and_then(|()| action(child));
    let _ = kill(child, Signal::SIGKILL);
    let _ = waitpid(child, Some(WaitPidFlag::__WALL));
    traced.map_err(|e| e.to_string())
}

fn host(why: &str) -> EngineError {
    EngineError::Host(why.to_owned())
}

pub const COVERAGE: &str = "any syscall of 64-bit tracees: errno (the call is skipped) and/or a delay before the call; every call of the target stops in chaos-user, so it costs microseconds per call (auto picks it for errnos no pre-call kernel engine covers, and for delays with when=before)";

/// No eBPF program: the tracer is chaos-user itself.
pub fn programs(_syscall: &str) -> Option<Vec<&'static str>> {
    Some(Vec::new())
}
