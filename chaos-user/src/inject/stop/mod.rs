//! Engine `stop`: decided in the kernel, carried out by chaos-user's tracer for the perturbed call
//! only (kernel side: `chaos-ebpf/src/inject_stop.rs`). The entry program decides exactly as for
//! the other in-kernel engines, records the fault and sends the thread SIGSTOP; the ptrace
//! engine's tracer, seizing the target's threads but resuming them with PTRACE_CONT (no syscall
//! stops), holds the thread at that stop and/or sets its result (`ptrace/stops.rs`). An errno
//! replaces the result after the call ran when it did not block (`when=after`), and is returned
//! instead of the call when the pending signal interrupted it (`when=before`); a delay alone
//! re-issues an interrupted call after the delay. A guardian process (`guardian.rs`) continues
//! the targets if chaos-user is killed.
pub mod guardian;

use nix::sys::{
    ptrace,
    signal::Signal,
    wait::{WaitPidFlag, WaitStatus, waitpid},
};

use super::{engine::EngineError, ptrace as tracer};

pub const COVERAGE: &str = "any syscall of 64-bit tracees except exit, execve and signal returns: errno (after a call that did not block, instead of one that did) and/or a delay; only the perturbed call stops in chaos-user";

/// Calls the engine cannot perturb: they never return (exit), replace the registers the tracer
/// would set (execve, rt_sigreturn), or are the kernel's own restart.
const REFUSED: [&str; 6] = [
    "exit",
    "exit_group",
    "execve",
    "execveat",
    "rt_sigreturn",
    "restart_syscall",
];

/// No program of its own: the decision runs in the entry program, the rest in the tracer.
pub fn programs(syscall: &str) -> Option<Vec<&'static str>> {
    (!REFUSED.contains(&syscall)).then(Vec::new)
}

/// What the tracer needs (ptrace on this host), and the engine's stop handled for real: a child
/// of ours is seized (and left running), sent SIGSTOP, seen in its
/// signal-delivery-stop, resumed with the signal suppressed, and found running again. The
/// kernel's `bpf_send_signal_thread` is checked by the entry program's load.
pub fn probe() -> Result<(), EngineError> {
    tracer::probe_host()?;
    tracer::with_seized_child(|child| {
        // SAFETY: a signal to one thread of our own child.
        let sent = unsafe {
            libc::syscall(
                libc::SYS_tgkill,
                child.as_raw(),
                child.as_raw(),
                libc::SIGSTOP,
            )
        };
        nix::errno::Errno::result(sent)?;
        match waitpid(child, Some(WaitPidFlag::__WALL))? {
            WaitStatus::Stopped(_, Signal::SIGSTOP) => {}
            other => return Err(unexpected(other)),
        }
        ptrace::cont(child, None)?;
        // Suppressed: the child runs on (in pause) instead of group-stopping.
        std::thread::sleep(std::time::Duration::from_millis(20));
        match waitpid(child, Some(WaitPidFlag::__WALL | WaitPidFlag::WNOHANG))? {
            WaitStatus::StillAlive => Ok(()),
            other => Err(unexpected(other)),
        }
    })
    .map_err(|why| EngineError::Host(format!("the stop engine's tracer: {why}")))
}

fn unexpected(status: WaitStatus) -> nix::errno::Errno {
    log::debug!("stop probe: unexpected {status:?}");
    nix::errno::Errno::EPROTO
}
