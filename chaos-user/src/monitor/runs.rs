//! Whether a syscall program runs once attached. In the arm64 VM (Debian's 6.1 under QEMU) a
//! session that attached right after another one ended now and then had its `sys_enter` program
//! attached but never run, while its `sys_exit` program ran: the monitor lost its latencies and
//! the in-kernel engines decided nothing, silently. The kernel's BPF run statistics (switched on
//! for the check alone) tell: this thread makes calls, and the program's run count must grow.
use std::{
    os::fd::OwnedFd,
    time::{Duration, Instant},
};

use aya::{
    programs::RawTracePoint,
    sys::{Stats, enable_stats},
};

/// How long a program may take to show a run.
const WAIT: Duration = Duration::from_millis(200);

/// BPF run statistics, on while this is held: switched on once for every program checked (each
/// switch patches the kernel's text).
pub struct RunCounts {
    _enabled: OwnedFd,
}

impl RunCounts {
    /// None when the kernel cannot count (BPF statistics: Linux 5.8+).
    pub fn start() -> Option<Self> {
        let enabled = enable_stats(Stats::RunTime).ok()?;
        Some(Self { _enabled: enabled })
    }

    /// Whether `program` (attached to a syscall tracepoint) runs; None when the kernel cannot
    /// tell.
    pub fn runs(&self, program: &RawTracePoint) -> Option<bool> {
        let before = program.info().ok()?.run_count();
        let deadline = Instant::now() + WAIT;
        loop {
            // SAFETY: no arguments; any call goes through both syscall tracepoints.
            unsafe { libc::getppid() };
            if program.info().ok()?.run_count() > before {
                return Some(true);
            }
            if Instant::now() > deadline {
                return Some(false);
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}
