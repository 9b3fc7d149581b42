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

/// What an interruptible call returns when a signal is pending (kernel-internal codes included).
const INTERRUPTED: [i64; 5] = [
    libc::EINTR as i64,
    512, // ERESTARTSYS
    513, // ERESTARTNOINTR
    514, // ERESTARTNOHAND
    516, // ERESTART_RESTARTBLOCK
];

/// What the thread's call becomes when it goes on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopAction {
    /// The call returns -errno: after it ran (it did not block), or instead of it (it did).
    Errno(u32),
    /// The signal interrupted the call: it is issued again, as the kernel restarts calls.
    Reissue,
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
        if let Some(faults) = &mut self.stop_faults
            && let Err(e) = faults.insert(tid as u32, StopFault::default(), 0)
        {
            eprintln!("syschaos: stop: thread {tid} cannot be perturbed: {e}");
        }
    }

    /// A thread gone or released: never stopped again.
    pub fn stop_untrack(&mut self, tid: i32) {
        if let Some(faults) = &mut self.stop_faults {
            let _ = faults.remove(&(tid as u32));
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
    let interrupted = INTERRUPTED.contains(&-sys::return_value(tid).ok()?);
    Some(match (fault.errno, interrupted) {
        (0, true) => StopAction::Reissue,
        (0, false) => StopAction::Keep,
        (errno, _) => StopAction::Errno(errno),
    })
}

/// Puts the action in the stopped thread's registers.
pub fn apply(tid: i32, action: StopAction) {
    let result = match action {
        StopAction::Errno(errno) => sys::set_return(tid, -i64::from(errno)),
        StopAction::Reissue => sys::reissue(tid),
        StopAction::Keep => Ok(()),
    };
    if let Err(e) = result
        && e != Errno::ESRCH
    {
        eprintln!("syschaos: stop: cannot complete the fault of thread {tid}: {e}");
    }
}
