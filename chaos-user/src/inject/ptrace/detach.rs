//! Detaching from every tracee so that each continues as if never traced: a thread we hold for a
//! delay is let go at once (its delay cut short; a decided errno is still completed at its exit
//! stop); the others are interrupted and detached at their next stop: a call whose errno was
//! decided gets it first, a pending signal is handed to PTRACE_DETACH so it is delivered, a
//! group-stopped thread stays in its (job-control) stop. A thread the stop engine holds, or whose
//! SIGSTOP from the engine is still pending, gets its fault completed and the signal suppressed.
//! Threads that never stop (zombie leaders...) are released by the kernel when this thread ends.
use std::collections::HashSet;

use nix::errno::Errno;

use super::{
    stops, sys,
    sys::Event,
    tracer::{Run, Thread, Tracer},
};

/// How long to wait for the running threads to stop.
const DETACH_TIMEOUT_NS: u64 = 5_000_000_000;
const CHECK_PERIOD_NS: u64 = 100_000_000;

#[derive(Debug, Default)]
pub struct Summary {
    pub detached: usize,
    /// Threads that did not stop in time; the kernel detaches them when the tracer thread ends.
    pub left_attached: usize,
}

pub fn all(tracer: &mut Tracer) -> Summary {
    let mut summary = Summary::default();
    // Stopped by us: held at their entry stop, or new children not placed yet.
    let stopped: Vec<i32> = tracer
        .threads
        .iter()
        .filter(|(_, t)| matches!(t.run, Run::Held { .. } | Run::Orphan { .. }))
        .map(|(&tid, _)| tid)
        .collect();
    for tid in stopped {
        let Some(thread) = tracer.threads.get_mut(&tid) else {
            continue;
        };
        if let Some(action) = thread.stop.take() {
            stops::apply(tid, action);
        }
        // A decided errno: skip the call now and complete it at the exit stop (below).
        if let Some(decision) = thread.held.take()
            && decision.errno != 0
        {
            if sys::skip_call(tid).is_ok() && sys::resume(tid, 0).is_ok() {
                thread.pending_errno = decision.errno;
                thread.run = Run::Running;
                continue;
            }
            tracer.rules.undo(decision.rule);
        }
        // Otherwise the call runs now, untouched.
        tracer.threads.remove(&tid);
        if sys::detach(tid, 0).is_ok() {
            summary.detached += 1;
        }
    }
    tracer.holds.clear();

    // The others run (or listen in group-stop): make each stop, then detach it there.
    let running: Vec<i32> = tracer.threads.keys().copied().collect();
    for tid in running {
        if sys::interrupt(tid) == Err(Errno::ESRCH) {
            tracer.threads.remove(&tid);
        }
    }
    let mut done = HashSet::new();
    let deadline = sys::now_ns() + DETACH_TIMEOUT_NS;
    while !tracer.threads.is_empty() {
        let now = sys::now_ns();
        if now > deadline {
            break;
        }
        tracer.timer.arm((now + CHECK_PERIOD_NS).min(deadline));
        match sys::wait(false) {
            Ok((tid, status)) => {
                if detach_at_stop(tracer, tid, status, &mut done) {
                    summary.detached += 1;
                }
            }
            Err(Errno::EINTR) => {
                // Dead threads never stop: stop waiting for them.
                tracer
                    .threads
                    .retain(|&tid, _| !matches!(sys::state(tid), None | Some('Z' | 'X')));
            }
            Err(_) => break,
        }
    }
    summary.left_attached = tracer.threads.len();
    summary
}

/// Detaches `tid` at this stop, finishing what it was doing. True if it was detached.
fn detach_at_stop(tracer: &mut Tracer, tid: i32, status: i32, done: &mut HashSet<i32>) -> bool {
    let thread = tracer.threads.remove(&tid);
    let signal = match Event::decode(status) {
        Event::Gone => return false,
        Event::Syscall => {
            // At the exit stop of a call skipped for an errno: complete the injection.
            if let Some(thread) = &thread
                && thread.in_syscall
                && thread.pending_errno != 0
            {
                let _ = sys::set_return(tid, -i64::from(thread.pending_errno));
            }
            0
        }
        Event::NewChild => {
            // The child is traced already and stops on its own: detach it then too.
            if let Ok(child) = sys::event_message(tid)
                && !done.contains(&child)
            {
                let target = thread.as_ref().map_or(0, |t| t.target);
                tracer
                    .threads
                    .entry(child)
                    .or_insert_with(|| Thread::new(target, Run::Seized));
            }
            0
        }
        Event::Exec => {
            if let Ok(former) = sys::event_message(tid)
                && former != tid
            {
                tracer.threads.remove(&former);
            }
            0
        }
        Event::Signal(signal) => match tracer.stop_faults.as_mut() {
            Some(faults) if signal == libc::SIGSTOP => match stops::take(faults, tid) {
                Some(fault) => {
                    if let Some(action) = stops::action(tid, &fault) {
                        stops::apply(tid, action);
                    }
                    0
                }
                None => signal,
            },
            _ => signal,
        },
        Event::Interrupted
            if tracer
                .stop_faults
                .as_ref()
                .is_some_and(|faults| stops::pending_fault(faults, tid)) =>
        {
            // The engine's SIGSTOP is on its way: let it come, then complete it (above).
            let thread = thread.unwrap_or_else(|| Thread::new(0, Run::Running));
            tracer.threads.insert(tid, thread);
            let _ = sys::resume(tid, 0);
            return false;
        }
        Event::GroupStop | Event::Interrupted | Event::Unrequested => 0,
    };
    done.insert(tid);
    sys::detach(tid, signal).is_ok()
}
