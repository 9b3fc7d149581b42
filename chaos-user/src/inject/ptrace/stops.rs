//! The stop engine's part of the tracer (kernel side: `chaos-ebpf/src/inject_stop.rs`). The
//! kernel decided the fault at syscall entry, recorded it in `STOP_FAULTS` and sent the thread
//! SIGSTOP; here, at that thread's SIGSTOP signal-delivery-stop, the fault is carried out: the
//! thread is held for the delay, then its return value is set to -errno, or a call the signal
//! interrupted is re-issued (delay alone), and it goes on with the signal suppressed. A SIGSTOP
//! with no fault recorded is someone else's and is delivered: the process stops as usual.
use aya::maps::{HashMap, MapData};
use chaos_common::StopFault;
use nix::errno::Errno;

use super::{
    sys,
    tracer::{Run, Tracer},
};

/// `STOP_FAULTS`, through chaos-user's own descriptor of it.
pub type StopFaults = HashMap<MapData, u32, StopFault>;

/// Whether an interruptible call that returned this found a signal pending: -EINTR or a
/// kernel-internal restart code.
fn interrupted(returned: i64) -> bool {
    returned == -i64::from(libc::EINTR) || sys::RESTART_CODES.contains(&-returned)
}

/// What the thread's call becomes when it goes on. `returned`: what the call returned,
/// kernel-internal codes included; `arg0`: its first argument (arm64 needs both).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopAction {
    /// The call returns -errno: after it ran (it did not block), or instead of it (it did).
    Errno { errno: u32, returned: i64 },
    /// The signal interrupted the call: it is issued again, as the kernel restarts calls.
    Reissue { returned: i64, arg0: u64 },
    /// A delay alone after a call that completed: its result stands.
    Keep,
}

impl Tracer {
    /// A signal-delivery-stop: the stop engine's SIGSTOP is handled, any other signal delivered.
    pub fn on_signal(&mut self, tid: i32, signal: i32) {
        let fault = match &mut self.stop_faults {
            Some(faults) if signal == libc::SIGSTOP => take(faults, tid),
            _ => None,
        };
        let Some(fault) = fault else {
            let _ = sys::resume(tid, signal);
            return;
        };
        let Some(action) = action(tid, &fault) else {
            // Gone meanwhile: its exit is reported next.
            return;
        };
        if fault.delay_ns == 0 || !self.threads.contains_key(&tid) {
            apply(tid, action);
            let _ = sys::resume(tid, 0);
            return;
        }
        let seq = self.hold(tid, fault.delay_ns);
        if let Some(thread) = self.threads.get_mut(&tid) {
            thread.run = Run::Held { seq };
            thread.stop = Some(action);
        }
    }
}

impl Tracer {
    /// A thread seized for the stop engine: the kernel may stop it from now on.
    pub fn stop_track(&mut self, tid: i32) {
        if let Some(faults) = &mut self.stop_faults {
            match faults.insert(tid as u32, StopFault::default(), 0) {
                Ok(()) => log::debug!("stop: thread {tid} tracked"),
                Err(e) => eprintln!("syschaos: stop: thread {tid} cannot be perturbed: {e}"),
            }
        }
    }

    /// A thread gone or released: never stopped again.
    pub fn stop_untrack(&mut self, tid: i32) {
        if let Some(faults) = &mut self.stop_faults {
            let _ = faults.remove(&(tid as u32));
            log::debug!("stop: thread {tid} untracked");
        }
    }
}

/// Every thread released: none is stopped any more (the rules left the kernel already).
pub fn forget_all(tracer: &mut Tracer) {
    if let Some(faults) = &mut tracer.stop_faults {
        let tids: Vec<u32> = faults.keys().filter_map(Result::ok).collect();
        for tid in tids {
            let _ = faults.remove(&tid);
        }
    }
}

/// The fault recorded for this thread, if this SIGSTOP is the engine's (the thread is idle again).
/// A fault to re-issue stays, taken: the kernel clears it when the call enters again, and a
/// SIGSTOP that comes meanwhile is someone else's.
pub fn take(faults: &mut StopFaults, tid: i32) -> Option<StopFault> {
    let fault = faults.get(&(tid as u32), 0).ok()?;
    let now = match fault.state {
        StopFault::DECIDED => StopFault::default(),
        // Unless it re-enters as `restart_syscall` (arm64), which consumes no marker.
        StopFault::REISSUE if !sys::reenters_as_itself(fault.ret) => StopFault::default(),
        StopFault::REISSUE => StopFault {
            state: StopFault::REISSUING,
            ..fault
        },
        _ => return None,
    };
    faults.insert(tid as u32, now, 0).ok()?;
    Some(fault)
}

/// Whether the SIGSTOP pending for `tid` (not delivered yet) is the engine's.
pub fn pending_fault(faults: &StopFaults, tid: i32) -> bool {
    const SIGSTOP_BIT: u64 = 1 << (libc::SIGSTOP - 1);
    let pending = sys::status_field(tid, "SigPnd")
        .and_then(|hex| u64::from_str_radix(&hex, 16).ok())
        .unwrap_or(0);
    pending & SIGSTOP_BIT != 0
        && faults
            .get(&(tid as u32), 0)
            .is_ok_and(|fault| matches!(fault.state, StopFault::DECIDED | StopFault::REISSUE))
}

/// How the fault applies to the call the thread stopped after.
pub fn action(tid: i32, fault: &StopFault) -> Option<StopAction> {
    let returned = sys::return_value(tid, fault.ret).ok()?;
    Some(match (fault.errno, interrupted(returned)) {
        (0, true) => StopAction::Reissue {
            returned,
            arg0: fault.arg0,
        },
        (0, false) => StopAction::Keep,
        (errno, _) => StopAction::Errno { errno, returned },
    })
}

/// Puts the action in the stopped thread's registers.
pub fn apply(tid: i32, action: StopAction) {
    let result = match action {
        StopAction::Errno { errno, returned } => {
            sys::fail_at_signal_stop(tid, -i64::from(errno), returned)
        }
        StopAction::Reissue { returned, arg0 } => sys::reissue(tid, returned, arg0),
        StopAction::Keep => Ok(()),
    };
    if let Err(e) = result
        && e != Errno::ESRCH
    {
        eprintln!("syschaos: stop: cannot complete the fault of thread {tid}: {e}");
    }
}
